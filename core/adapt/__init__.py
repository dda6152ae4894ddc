"""adapt: adapt pretrained models to tasks with parameter-efficient methods.

The public API for plugin authors is what this module exports (and :mod:`adapt.testing`);
everything else may change. docs/plugin-guide.md documents each name.
"""

from adapt.api import (
    MODEL_KINDS,
    Backend,
    Engine,
    FSDPOptions,
    LoadedModel,
    Method,
    NoParams,
    Parallel,
    Params,
    Saver,
    Task,
)
from adapt.config import OPTIMIZERS, SCHEDULERS, literal_optim_args, optim_args, run_config_model
from adapt.data import read_table, require_columns, split_off
from adapt.errors import (
    AdaptError,
    ConfigError,
    DataError,
    HardwareError,
    ModelError,
    PluginError,
    RunInterrupted,
    StorageError,
    first_line,
)
from adapt.hookspecs import hookimpl
from adapt.logs import progress_bars, route_library_logger
from adapt.memory import peak_memory
from adapt.models import parameter_report
from adapt.models import read_info as model_info
from adapt.plugins import get_registry
from adapt.report import confusion_matrix_figure, examples_figure, majority_class_accuracy, plot_curves
from adapt.resolve import run_from_config, saved_run
from adapt.run import Run

__version__ = "0.1.0"

__all__ = [
    "MODEL_KINDS", "OPTIMIZERS", "SCHEDULERS", "AdaptError", "Backend", "ConfigError", "DataError", "Engine",
    "FSDPOptions", "HardwareError", "LoadedModel", "Method", "ModelError", "NoParams", "Parallel", "Params",
    "PluginError", "Run", "RunInterrupted", "Saver", "StorageError", "Task", "__version__", "confusion_matrix_figure",
    "examples_figure", "first_line", "get_registry", "hookimpl", "literal_optim_args", "majority_class_accuracy",
    "model_info", "optim_args", "parameter_report", "peak_memory", "plot_curves", "progress_bars", "read_table",
    "require_columns", "route_library_logger", "run_config_model", "run_from_config", "saved_run", "split_off",
]
