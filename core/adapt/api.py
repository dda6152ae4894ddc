"""The five kinds of object a plugin registers: Task, Method, Backend, Saver and Engine, and the
typed settings a backend hands to an engine (:class:`Parallel`).

Each has a ``name`` (what users type), a ``Params`` pydantic model (its own section of the run
config, with defaults and help) and a few methods the core calls during a run. Heavy libraries
are imported inside those methods, never at module level, so listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from adapt.config import RunConfig
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


# The kinds of model a method's training defaults can differ by (:meth:`Task.model_kind`).
MODEL_KINDS: dict[str, str] = {
    "text": "transformer text models", "cnn": "convolutional image models", "vit": "vision transformers",
    "detector": "OpenMMLab detectors, segmenters and pose models"}


class Task(_Named):
    """What to learn: how to load a model and data for it, its metrics and its predictions.

    ``engine`` names the registered :class:`Engine` that trains it ("hf": the HF Trainer, in
    adapt-core; "mmengine": an MMEngine Runner, in adapt-vision).
    ``metrics`` lists the metric names this task reports (usable as metric_for_best_model,
    besides "loss" where ``eval_loss``; otherwise the first metric is the default).
    ``training_defaults``: ``training`` values this task trains well with (batch sizes, epochs),
    used where neither the user nor the method sets them.
    """

    engine: ClassVar[str] = "hf"
    metrics: ClassVar[tuple[str, ...]] = ()
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    eval_loss: ClassVar[bool] = True  # evaluation reports a loss (MMEngine detectors report metrics only)
    label_names: ClassVar[tuple[str, ...]] = ("labels",)
    carves_validation: ClassVar[bool] = True  # data.validation_split can carve validation rows off the training data
    training_defaults: ClassVar[dict[str, Any]] = {}

    def model_kind(self, config: RunConfig) -> str | None:
        """Which of :data:`MODEL_KINDS` the config's model is, from the config alone (no loading):
        it picks the method's training defaults; None where the config cannot tell (no model)."""
        return "text"

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

    def examples(self, run: Run, split: str, path: str) -> Any:
        """The examples of a data file as training iterates over them, for counting (``adapt plan``'s
        rows and steps): by default the rows of the table; a COCO file's images for detection."""
        from adapt.data import read_table

        return read_table(path, split)

    def load_data(self, run: Run, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        """Read and preprocess the named splits ({"train": path, ...}) into engine datasets."""
        raise NotImplementedError

    def engine_settings(self, run: Run, loaded: LoadedModel) -> dict[str, Any]:
        """Further settings for the task's engine, in the engine's own terms (MMEngine: Runner
        arguments such as ``default_scope``); none for most tasks."""
        return {}

    def data_collator(self, run: Run, loaded: LoadedModel) -> Callable | None:
        """Batch collator for the engine (None: the engine's default)."""
        return None

    def compute_metrics(self, run: Run, loaded: LoadedModel) -> Callable | None:
        """A function from the engine's predictions to ``{metric: value}``."""
        return None

    def baselines(self, run: Run, loaded: LoadedModel, predictions: Any) -> dict[str, float]:
        """Metrics of a trivial predictor on the split of ``predictions`` (classification: always the
        split's most frequent class), shown beside the run's at the end and kept in metrics.json
        as ``baseline``. None by default."""
        return {}

    def figures(self, run: Run, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """Pictures of a split's predictions (``predictions``: what :meth:`compute_metrics`'s
        function received), as ``{name: matplotlib Figure}``; the engine writes them to the run
        folder's ``pictures/<split>_<name>.png``. None by default."""
        return {}

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
    ``training_defaults``: per model kind (:data:`MODEL_KINDS`; ``"*"``: any kind), the
    ``training`` values the method trains well with (its learning rate above all), used where the
    user sets none; they win over the task's.
    """

    training_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def load_options(self, params: BaseModel) -> dict[str, Any]:
        """Extra keyword arguments for model loading (e.g. a quantization config)."""
        return {}

    def apply(self, model: torch.nn.Module, params: BaseModel, run: Run) -> torch.nn.Module:
        raise NotImplementedError

    def merge(self, model: torch.nn.Module, params: BaseModel) -> torch.nn.Module | None:
        return model

    def learning_rate_multipliers(self, params: BaseModel) -> dict[str, float]:
        """Parameters whose name contains a key train at ``learning_rate`` times its value (LoRA+:
        the B matrices faster); every engine builds its optimizer's parameter groups from this."""
        return {}

    def after_optimizer_step(self, model: torch.nn.Module, params: BaseModel, step: int, total_steps: int) -> None:
        """Called by every engine after each optimizer step, while the gradients are still there
        (``step`` counts from 0 of ``total_steps``): for methods that change themselves as training
        goes (AdaLoRA's rank budget). Most methods need nothing."""


class Backend(_Named):
    """Where to run: launches the workers and says which data-parallel strategy they use.

    ``strategy`` names that strategy ("ddp", "deepspeed", "fsdp"; None: one process), so that a
    pairing the task's engine cannot drive is refused before anything starts; in the workers,
    :meth:`parallel` gives the engine its settings.
    """

    strategy: ClassVar[str | None] = None

    def check(self, run: Run) -> None:
        """Raise an AdaptError for settings this backend cannot run (``adapt config validate``
        and training call it before any worker starts); :class:`adapt.HardwareError` for what
        this machine lacks."""

    def launch(self, run_in_worker: Callable[[], Any], run: Run) -> Any:
        """Run ``run_in_worker`` in every worker process and return rank 0's result."""
        raise NotImplementedError

    def parallel(self, run: Run) -> Parallel | None:
        """The data-parallel settings the engine applies in each worker (None: one process)."""
        return None

    def gather_weights(self, model: torch.nn.Module, run: Run) -> AbstractContextManager[Any]:
        """A context, entered by every worker around saving, in which ``model`` holds its full
        weights (sharding backends gather them: ZeRO-3, FSDP); rank 0 saves inside it."""
        return nullcontext()


class Saver(_Named):
    """A format to save the final model in, in a folder of its own."""

    def default_for(self, config: RunConfig) -> bool:
        """Whether this saver saves a run whose ``savers`` do not name it (adapt-mlflow's mlflow
        saver does, unless ``save_as_mlflow_model: false``)."""
        return False

    def check(self, loaded: LoadedModel) -> None:
        """Raise an AdaptError before training if this saver cannot save this model."""

    def save(self, loaded: LoadedModel, folder: str, run: Run) -> list[str]:
        """Write the model to ``folder``; return the paths written."""
        raise NotImplementedError

    def load(self, folder: str, like: torch.nn.Module | None = None) -> torch.nn.Module:
        """Read back what :meth:`save` wrote (into ``like`` where the format holds weights only)."""
        raise NotImplementedError


class Engine(_Named):
    """A training loop (HF Trainer, an MMEngine Runner, a plain PyTorch loop...) for the tasks that
    name it. It maps the common training parameters (``run.training``) onto its loop and uses the
    run's public methods for what every engine does alike (:class:`adapt.Run`).

    ``strategies``: the data-parallel strategies (:attr:`Backend.strategy`) it drives besides one
    process; any other backend is refused before a worker starts. ``task_params``: the Params
    class the parameters of its tasks subclass, i.e. the fields it reads from ``run.task_params``.
    """

    strategies: ClassVar[frozenset[str]] = frozenset()
    task_params: ClassVar[type[BaseModel]] = Params

    def check(self, run: Run) -> None:
        """Raise an AdaptError for settings this engine cannot run, from the config and the
        installed packs alone (``adapt config validate`` and training call it before any worker
        starts); :class:`adapt.HardwareError` for what this machine lacks (a GPU)."""

    def train(self, run: Run) -> dict[str, Any]:
        """Load, adapt, train, test and save (:meth:`Run.finish`); return the final metrics."""
        raise NotImplementedError

    def evaluate(self, run: Run, model_dir: str, path: str) -> dict[str, Any]:
        """Metrics (``test_*``) of the model saved in ``model_dir`` on the data file at ``path``."""
        raise NotImplementedError

    def predict(self, run: Run, model_dir: str, path: str) -> list[dict[str, Any]]:
        """Predictions of a saved model on one data file: by default the task's own."""
        loaded = run.load_saved(model_dir)
        loaded.model.eval()
        return run.task.predict(run, loaded, path)

    def gather_weights(self, model: torch.nn.Module, run: Run) -> AbstractContextManager[Any]:
        """The context in which every worker saves (see :meth:`Backend.gather_weights`); an engine
        that shards the model itself for a strategy gathers it here."""
        return run.backend.gather_weights(model, run)


class FSDPOptions(Params):
    """Fully sharded data parallel settings (accelerate's FSDP plugin names), as a backend hands
    them to the engines: the HF engine runs FSDP2 (transformers 5), MMEngine tasks FSDP1."""

    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = Field(
        "FULL_SHARD", description="What is sharded: FULL_SHARD (weights, gradients, optimizer state), SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD.")
    auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"] = Field(
        "TRANSFORMER_BASED_WRAP", description="How the model is split into FSDP units (MMEngine tasks: the whole model is one unit; SIZE_BASED_WRAP is refused there).")
    transformer_layer_cls_to_wrap: list[str] | None = Field(None, description="Layer classes wrapped as units (None: the model's _no_split_modules).")
    min_num_params: int = Field(100_000_000, ge=0, description="SIZE_BASED_WRAP: parameters per unit.")
    backward_prefetch: Literal["BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"] = Field("BACKWARD_PRE", description="FSDP1: applied on MMEngine tasks; HF tasks run FSDP2 (transformers 5), which always prefetches in backward: only BACKWARD_PRE is accepted there.")
    forward_prefetch: bool = Field(False, description="FSDP1: applied on MMEngine tasks; FSDP2 (HF tasks) prefetches implicitly: only false is accepted there.")
    cpu_ram_efficient_loading: bool = Field(False, description="Load the pretrained weights on rank 0 only (HF tasks; MMEngine tasks load them on every rank: only false is accepted there).")
    offload_params: bool = Field(False, description="Keep parameters and gradients in CPU memory.")
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT"] = Field("FULL_STATE_DICT", description="Checkpoint format.")
    sync_module_states: bool = Field(True, description="FSDP1: applied on MMEngine tasks on GPUs (on the CPU every rank loads the same weights); FSDP2 (HF tasks): only true is accepted.")
    use_orig_params: bool = Field(True, description="FSDP1 name; adapt trains part of the model and reads the original parameters: only true is accepted.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="FSDP1: parameter, reduction and buffer dtype on MMEngine tasks; FSDP2 (HF tasks) follows training.precision: only no is accepted there.")


@dataclass(frozen=True)
class Parallel:
    """What a distributed backend asks of the engine in each worker (:meth:`Backend.parallel`):
    the strategy and its settings, which each engine maps onto its own loop (TrainingArguments
    fields, an MMEngine Runner strategy...)."""

    strategy: str  # "ddp", "deepspeed" or "fsdp"; a backend's ``strategy``
    dist_backend: str  # torch.distributed's: "nccl" (GPUs) or "gloo"
    find_unused_parameters: bool = False  # ddp: tolerate parameters without a gradient in a step
    deepspeed_config: dict[str, Any] | None = None  # deepspeed: the JSON config, HF "auto" values left for the engine
    fsdp: FSDPOptions | None = None  # fsdp: its options
