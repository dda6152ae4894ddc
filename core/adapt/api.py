"""The four kinds of object a plugin registers: Task, Method, Backend and Saver.

Each has a ``name`` (what users type), a ``Params`` pydantic model (its own section of the run
config, with defaults and help) and a few methods the core calls during a run. Heavy libraries
are imported inside those methods, never at module level, so listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from adapt.run import Run


class Params(BaseModel):
    """Base for plugin parameter models: unknown keys are errors, defaults are documented."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoParams(Params):
    """For objects that take no parameters."""


@dataclass
class LoadedModel:
    """A model as a task loaded it: the module, its processor (tokenizer, image processor) and
    the task's metadata (labels...) that must travel with the saved model."""

    model: torch.nn.Module
    processor: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict, repr=False)  # the task's, for this run; never saved


class _Named:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Task(_Named):
    """What to learn: how to load a model and data for it, its metrics and its predictions.

    ``engine`` names the training engine of the core that runs it ("hf": HF Trainer;
    "mmengine": an MMEngine Runner, see :mod:`adapt.engines.mmengine`).
    ``metrics`` lists the metric names this task reports (usable as metric_for_best_model,
    besides "loss" where ``eval_loss``; otherwise the first metric is the default).
    """

    engine: ClassVar[str] = "hf"
    metrics: ClassVar[tuple[str, ...]] = ()
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    eval_loss: ClassVar[bool] = True  # evaluation reports a loss (MMEngine detectors report metrics only)
    label_names: ClassVar[tuple[str, ...]] = ("labels",)

    def generation_settings(self, run: Run) -> dict[str, Any] | None:
        """For tasks whose evaluation generates text: Seq2SeqTrainingArguments fields such as
        ``generation_max_length`` (the HF engine then uses Seq2SeqTrainer); None otherwise."""
        return None

    def preprocess_logits(self, run: Run, loaded: LoadedModel) -> Callable | None:
        """Reduce logits batch by batch before metrics (e.g. to token losses for perplexity)."""
        return None

    def inspect_data(self, run: Run) -> dict[str, Any]:
        """Read what the model shape depends on (label set...) from the training data."""
        return {}

    def load_model(self, run: Run, source: str, meta: dict[str, Any]) -> LoadedModel:
        """Load the pretrained model at ``source`` (a path or hub id) shaped by ``meta``."""
        raise NotImplementedError

    def head_modules(self, model: torch.nn.Module) -> list[str] | None:
        """Names of the task head's modules, trained by every method (e.g. ``["classifier"]``);
        ``[]`` when the model has no separate head; None to let the method find it."""
        return None

    def load_data(self, run: Run, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        """Read and preprocess the named splits ({"train": path, ...}) into engine datasets."""
        raise NotImplementedError

    def engine_settings(self, run: Run, loaded: LoadedModel) -> dict[str, Any]:
        """Further settings for the task's engine (MMEngine: Runner arguments such as
        ``default_scope``); none for most tasks."""
        return {}

    def data_collator(self, run: Run, loaded: LoadedModel) -> Callable | None:
        """Batch collator for the engine (None: the engine's default)."""
        return None

    def compute_metrics(self, run: Run, loaded: LoadedModel) -> Callable | None:
        """A function from the engine's predictions to ``{metric: value}``."""
        return None

    def predict(self, run: Run, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        """Predictions, one JSON-able dict per input row of the data file at ``path``."""
        raise NotImplementedError

    def predict_columns(self, run: Run, columns: list[str]) -> list[str]:
        """Which of a data file's ``columns`` :meth:`predict` reads (model signatures record
        them); all of them unless the task says otherwise."""
        return list(columns)

    def example_inputs(self, run: Run, path: str, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` inputs of the data file at ``path`` as :meth:`predict` reads them
        (model signatures and input examples): by default its rows in :meth:`predict_columns`."""
        from adapt.data import read_table

        table = read_table(path, "example")
        columns = self.predict_columns(run, table.column_names)
        return table.select(range(min(limit, len(table)))).select_columns(columns).to_list()

    def save_model(self, loaded: LoadedModel, folder: str) -> None:
        """Write the (plain, merged) model and its processor in the task's native format."""
        raise NotImplementedError


class Method(_Named):
    """How to adapt: which parameters train, and what is added to the model.

    Methods act on any ``torch.nn.Module``. ``apply`` returns the model to train with only the
    intended parameters requiring gradients; ``merge`` returns a plain model with the adaptation
    folded in, or None when it cannot or should not be merged (the adapter is then saved alone).
    """

    def load_options(self, params: BaseModel) -> dict[str, Any]:
        """Extra keyword arguments for model loading (e.g. a quantization config)."""
        return {}

    def apply(self, model: torch.nn.Module, params: BaseModel, run: Run) -> torch.nn.Module:
        raise NotImplementedError

    def merge(self, model: torch.nn.Module, params: BaseModel) -> torch.nn.Module | None:
        return model


class Backend(_Named):
    """Where to run: launches the workers and adds its settings to each engine."""

    def launch(self, run_in_worker: Callable[[], Any], run: Run) -> Any:
        """Run ``run_in_worker`` in every worker process and return rank 0's result."""
        raise NotImplementedError

    def engine_settings(self, engine: str, run: Run) -> dict[str, Any]:
        """Settings for an engine, e.g. TrainingArguments fields for "hf"."""
        return {}

    def gather_weights(self, model: torch.nn.Module, run: Run) -> AbstractContextManager[Any]:
        """A context, entered by every worker around saving, in which ``model`` holds its full
        weights (sharding backends gather them: ZeRO-3, FSDP); rank 0 saves inside it."""
        return nullcontext()


class Saver(_Named):
    """A format to save the final model in, in a folder of its own."""

    def check(self, loaded: LoadedModel) -> None:
        """Raise an AdaptError before training if this saver cannot save this model."""

    def save(self, loaded: LoadedModel, folder: str, run: Run) -> list[str]:
        """Write the model to ``folder``; return the paths written."""
        raise NotImplementedError

    def load(self, folder: str, like: torch.nn.Module | None = None) -> torch.nn.Module:
        """Read back what :meth:`save` wrote (into ``like`` where the format holds weights only)."""
        raise NotImplementedError
