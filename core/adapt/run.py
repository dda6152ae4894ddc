"""The Run: one resolved run (its config, plugin objects and folder) and what every engine does
the same way around its own training loop. Engines and packs use these methods, never the
modules behind them."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from adapt import folder, models
from adapt.errors import RunInterrupted

if TYPE_CHECKING:
    from adapt.api import Backend, Engine, LoadedModel, Method, Parallel, Saver, Task
    from adapt.config import RunConfig, TrainingConfig
    from adapt.plugins import Registry

log = logging.getLogger("adapt")
LAUNCHED_ENV = "ADAPT_LAUNCHED"  # set by launchers in the workers they start (value: "new" for a new run folder)
LOGGED_VALUES = 12  # a step's terminal line shows this many values; metrics.jsonl keeps them all


@dataclass
class Run:
    """Everything a run needs, resolved: plugin objects, their validated params, the folder.

    ``rank`` / ``world_size`` are this worker's place among the backend's processes;
    ``head_modules`` (the task's head) and ``load_options`` (the model section's and the method's
    options for a transformers from_pretrained) are set when the model
    loads; ``stop_requested`` names the signal that asked the run to stop; ``defaults`` names the
    training fields adapt chose (the user set none) and why.
    """

    config: RunConfig
    task: Task
    method: Method
    backend: Backend
    engine: Engine
    savers: list[Saver]
    task_params: BaseModel
    method_params: BaseModel
    backend_params: BaseModel
    output_dir: Path
    registry: Registry
    source: str | None = None
    rank: int = 0
    world_size: int = 1
    head_modules: list[str] | None = None
    model_path: str | None = None  # where the pretrained model was loaded from (see model_source)
    load_options: dict[str, Any] = field(default_factory=dict)
    stop_requested: str | None = None
    pictures_dir: Path | None = None  # adapt evaluate --results: where an engine's evaluate draws the task's pictures
    defaults: dict[str, str] = field(default_factory=dict)

    # what the run is --------------------------------------------------------------------
    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    @property
    def launched(self) -> bool:
        """A worker process started by a distributed backend's launcher."""
        return bool(os.environ.get(LAUNCHED_ENV))

    @property
    def training(self) -> TrainingConfig:
        """The common training parameters (``config.training``)."""
        return self.config.training

    @cached_property
    def parallel(self) -> Parallel | None:
        """The backend's data-parallel settings for this worker (None: one process)."""
        return self.backend.parallel(self)

    def path(self, name: str) -> Path:
        """A file or folder in the run folder."""
        return self.output_dir / name

    def resolved_dict(self, chosen: bool = True) -> dict[str, Any]:
        """The config with every default filled in, the plugin sections included; ``chosen=False``
        leaves out the training values nobody set (adapt's choices, TrainingConfig's defaults), so
        that resolving it again chooses them again, as for this run (launchers' worker configs)."""
        data = self.config.model_dump(mode="json")
        if not chosen:
            data["training"] = self.training.model_dump(mode="json", exclude_unset=True)
        data["output"] = str(self.output_dir)
        data["savers"] = [s.name for s in self.savers]
        data["task_params"] = self.task_params.model_dump(mode="json")
        data["method_params"] = self.method_params.model_dump(mode="json")
        data["backend_params"] = self.backend_params.model_dump(mode="json")
        return data

    # the run folder ---------------------------------------------------------------------
    def check_output(self) -> None:
        """Refuse to write into another run's folder unless resuming or told (ConfigError)."""
        folder.check_output(self.output_dir, self.training)

    def is_new_folder(self) -> bool:
        """Whether this run starts a new folder (one it may remove if bad input stops it early)."""
        if self.launched:
            return os.environ[LAUNCHED_ENV] == "new"
        return not folder.holds_files(self.output_dir)

    def launch_environment(self, new_folder: bool) -> dict[str, str]:
        """The variables a launcher sets for the workers it starts (they then run as workers)."""
        return {LAUNCHED_ENV: "new" if new_folder else "existing"}

    def has_checkpoint(self) -> bool:
        """Whether the engine wrote a checkpoint yet."""
        return folder.has_checkpoint(self.output_dir)

    def write_json(self, name: str, data: Any) -> None:
        """Write a JSON file of the run folder atomically."""
        folder.write_json(self.path(name), data)

    def save_pictures(self, split: str, draw: Callable[[], dict[str, Any]], folder: Path | None = None) -> list[Path]:
        """Write the pictures ``draw()`` returns (``{name: matplotlib Figure}``, a task's
        ``figures``) as ``<folder>/<split>_<name>.png`` (folder: :attr:`pictures_dir`, else the run
        folder's pictures/), on rank 0. A picture that fails is logged, never fatal: engines call
        this before the trained model is saved."""
        if not self.is_main_process:
            return []
        from adapt.report import save_figures

        try:
            written = save_figures(folder or self.pictures_dir or self.path("pictures"), split, draw())
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("pictures of the %s split not drawn: %s: %s", split, type(exc).__name__, exc)
            return []
        if written:
            log.info("pictures: %s", ", ".join(str(p) for p in written))
        return written

    def write_status(self, status: str, **extra: Any) -> None:
        """Record the run's status (and ``extra`` fields) in run.json; rank 0 only, never raises."""
        if self.is_main_process:
            folder.write_status(self.path("run.json"), status, **extra)

    def log_metrics(self, step: int, values: dict[str, Any], epoch: float | None = None) -> None:
        """Record a training log or an evaluation at ``step``: metrics.jsonl, the log, and the
        plugins' ``adapt_metrics_logged`` (rank 0 only)."""
        if not self.is_main_process or not values:
            return
        with self.path("metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "epoch": epoch, **values}, default=float) + "\n")
        shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
        if len(shown) > LOGGED_VALUES:  # per-class metrics of many classes: a line, not a screen
            shown = [*shown[:LOGGED_VALUES], f"... {len(shown) - LOGGED_VALUES} more in metrics.jsonl"]
        log.info("step %d: %s", step, ", ".join(shown))
        self.registry.notify("adapt_metrics_logged", run=self, metrics=dict(values), step=step)

    # data -------------------------------------------------------------------------------
    def data_files(self) -> dict[str, str]:
        """The run's data files by split: train, and validation / test where given."""
        data = self.config.data
        return {k: v for k, v in (("train", data.train), ("validation", data.validation), ("test", data.test)) if v}

    def data_limit(self, split: str) -> int | None:
        """At most this many rows of ``split`` are used (data.max_train_samples / max_eval_samples)."""
        data = self.config.data
        return data.max_train_samples if split == "train" else data.max_eval_samples

    def read_splits(self, splits: dict[str, str], read: Callable[[str, str], Any]) -> dict[str, tuple[Any, str]]:
        """Each split's rows as ``read(split, path)`` returns them (a ``datasets.Dataset`` or a
        list) and where they came from: validation carved off the training rows when
        ``data.validation_split`` asks (a seeded shuffle), then the row limits applied."""
        from adapt.data import split_off

        tables = {split: (read(split, path), path) for split, path in splits.items()}
        fraction = self.config.data.validation_split
        if "train" in tables and "validation" not in tables and fraction > 0:
            rows, path = tables["train"]
            train, validation = split_off(rows, fraction, self.training.seed)
            tables["train"], tables["validation"] = (train, path), (validation, f"{path} (validation_split)")
        for split, (rows, path) in list(tables.items()):
            limit = self.data_limit(split)
            if limit and len(rows) > limit:
                tables[split] = (rows.select(range(limit)) if hasattr(rows, "select") else rows[:limit], path)
        return tables

    def train_epochs(self, n_train: int) -> float:
        """The epochs to train over ``n_train`` rows: ``num_train_epochs``, or where that is adapt's
        default (the user set none), enough epochs for ``min_steps`` optimizer steps."""
        t = self.training
        epochs = t.num_train_epochs
        if "num_train_epochs" not in t.model_fields_set:
            needed = math.ceil(t.min_steps / self.steps_per_epoch(n_train))
            if needed > epochs:
                log.info("%d training rows: %d epochs instead of %g, for at least %d optimizer steps (training."
                         "min_steps; set num_train_epochs to choose)", n_train, needed, epochs, t.min_steps)
                epochs = needed
        return epochs

    def train_steps(self, n_train: int) -> int:
        """The optimizer steps training takes over ``n_train`` rows (``max_steps`` where set)."""
        t = self.training
        return t.max_steps if t.max_steps > 0 else max(1, math.ceil(self.train_epochs(n_train) * self.steps_per_epoch(n_train)))

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimizer steps in one epoch over ``n_train`` rows, across processes and accumulation."""
        t = self.training
        batches = math.ceil(n_train / (t.per_device_train_batch_size * self.world_size))
        return max(1, math.ceil(batches / t.gradient_accumulation_steps))

    # the model --------------------------------------------------------------------------
    def model_source(self) -> str:
        """Where the pretrained model loads from (an installed pack's folder for its reference,
        else ``model.path``)."""
        return models.model_source(self)

    def load_adapted(self, source: str, meta: dict[str, Any]) -> LoadedModel:
        """The task's model from ``source`` (with the method's load options), adapted by the method."""
        return models.load_adapted(self, source, meta)

    def load_for_training(self) -> tuple[LoadedModel, dict[str, Any]]:
        """The adapted model the run trains (its savers checked) and its parameter report, logged."""
        loaded = self.load_adapted(self.model_source(), self.task.inspect_data(self))
        for saver in self.savers:
            saver.check(loaded)
        params = models.parameter_report(loaded.model)
        log.info("method %s: %s of %s parameters trainable (%.4f%%)", self.method.name,
                 f"{params['trainable_parameters']:,}", f"{params['total_parameters']:,}", params["trainable_percent"])
        if self.head_modules:
            log.info("task head (trained in full by the methods that adapt the rest): %s", ", ".join(self.head_modules))
        t = self.training
        batch = t.per_device_train_batch_size
        log.info("effective batch size: %d per device x %d process(es) x %d accumulation = %d", batch,
                 self.world_size, t.gradient_accumulation_steps, batch * self.world_size * t.gradient_accumulation_steps)
        return loaded, params

    def device_line(self, device: Any, precision: str) -> str:
        """Where and how training computes, logged and kept in metrics.json as ``device``:
        "cuda:0 (NVIDIA H200), bf16, 2 process(es) over nccl"."""
        import torch

        device = torch.device(device)
        line = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
        line += f", {precision}"
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            line += f", {torch.distributed.get_world_size()} process(es) over {torch.distributed.get_backend()}"
        log.info("training on %s", line)
        return line

    def load_saved(self, model_dir: str | Path) -> LoadedModel:
        """The model a training run saved in ``model_dir`` (its ``model/`` folder), reloaded."""
        return models.load_saved(self, model_dir)

    # stopping on signals ----------------------------------------------------------------
    @contextlib.contextmanager
    def catch_stop_signals(self) -> Iterator[None]:
        """While training: SIGTERM / Ctrl-C set :attr:`stop_requested` (the engine then saves a
        checkpoint and stops); the previous handlers come back after."""

        def on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
            self.stop_requested = signal.Signals(signum).name
            log.warning("%s received: saving a checkpoint and stopping", self.stop_requested)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def should_stop(self) -> bool:
        """Whether to save and stop after this step. In a distributed run, a stop asked of any
        worker becomes every worker's at the same step (saving is collective under DeepSpeed,
        and a worker stopping alone would leave the others waiting): call it after every step."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([signal.Signals[self.stop_requested] if self.stop_requested else 0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and not self.stop_requested:
                self.stop_requested = signal.Signals(int(flag.item())).name
        return self.stop_requested is not None

    def raise_if_stopped(self) -> None:
        """After training: a stop that a signal asked for is recorded and reported, with how to resume."""
        if self.stop_requested:
            self.write_status("interrupted", signal=self.stop_requested)
            raise RunInterrupted(f"stopped by {self.stop_requested}; the last checkpoint is in {self.path('checkpoints')}; "
                                 "continue with --set training.resume_from_checkpoint=true")

    def resume_mismatch(self, exc: BaseException, checkpoint: str | None = None) -> None:
        """Turn an engine's failure to load ``checkpoint`` into the model (resume_from_checkpoint of
        another model or method) into a ConfigError; other errors are left to the caller."""
        from adapt.errors import ConfigError

        text = str(exc)
        signs = ("Error(s) in loading state_dict", "size mismatch", "Missing key", "optimizer's group")
        if not self.training.resume_from_checkpoint or not any(sign in text for sign in signs):
            return
        lines = text.splitlines() or [type(exc).__name__]
        detail = next((line.strip() for line in lines if "size mismatch" in line or "Missing" in line), lines[0])
        where = f"{checkpoint} does not fit" if checkpoint else "the checkpoint does not fit"
        raise ConfigError(f"training.resume_from_checkpoint: {where} this model (written for another model or "
                          f"method?): {detail}") from None

    # the end ----------------------------------------------------------------------------
    def finish(self, loaded: LoadedModel, model: Any, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record the test metrics, save the model (every worker inside the engine's gather, rank
        0 writing), then metrics.json and the curves. Evaluate before: merging changes the model."""
        from adapt.report import plot_curves

        if "test" in metrics and self.is_main_process:
            self.write_json("test_metrics.json", metrics["test"])
        loaded.model = model
        with self.engine.gather_weights(model, self):
            if self.is_main_process:
                models.save_outputs(self, loaded)
        if self.is_main_process:
            self.write_json("metrics.json", metrics)
            plot_curves(self.path("metrics.jsonl"), self.path("curves.png"))
        return metrics
