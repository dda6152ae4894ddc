"""adapt: adapt pretrained models to tasks with parameter-efficient methods.

The public API for plugin authors is what this module exports; everything else may change.
"""

from adapt.api import Backend, LoadedModel, Method, NoParams, Params, Saver, Task
from adapt.data import read_table, require_columns, split_off
from adapt.engines.mmengine import MMEngineParams
from adapt.errors import AdaptError, ConfigError, DataError, ModelError, PluginError, first_line
from adapt.hookspecs import hookimpl
from adapt.run import Run, parameter_report

__version__ = "0.1.0"

__all__ = [
    "AdaptError", "Backend", "ConfigError", "DataError", "LoadedModel", "MMEngineParams", "Method", "ModelError",
    "NoParams", "Params", "PluginError", "Run", "Saver", "Task", "hookimpl", "parameter_report",
    "first_line", "read_table", "require_columns", "split_off", "__version__",
]
