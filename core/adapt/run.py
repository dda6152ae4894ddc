"""One run, end to end: resolve the config against the plugins, prepare the run folder, hand
the work to the backend and the task's engine, and record what happened.

Run folder layout::

    config.yaml        the resolved config          run.json       status, times, versions
    train.log          the log                      metrics.jsonl  every log / evaluation
    metrics.json       final metrics                test_metrics.json  the test split's metrics
    curves.png         loss and metric curves       checkpoints/   the engine's checkpoints
    model/             the best model, reloadable by `adapt evaluate` / `adapt predict`
    saved/<saver>/     the model in each chosen saver's format
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from adapt.api import Backend, LoadedModel, Method, Saver, Task
from adapt.config import RunConfig, validate_params
from adapt.errors import AdaptError, ConfigError, PluginError, RunInterrupted
from adapt.plugins import Registry, get_registry

log = logging.getLogger("adapt")
ENGINES = ("hf", "mmengine")
LAUNCHED_ENV = "ADAPT_LAUNCHED"  # set by launchers in the workers they start (value: "new" for a new run folder)
RUN_LOGGERS = ("adapt", "transformers", "peft")  # what a run's train.log records


@dataclass
class Run:
    """Everything a run needs, resolved: plugin objects, their validated params, the folder."""

    config: RunConfig
    task: Task
    method: Method
    backend: Backend
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
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    @property
    def launched(self) -> bool:
        """A worker process started by a distributed backend's launcher."""
        return bool(os.environ.get(LAUNCHED_ENV))

    @property
    def training(self):  # noqa: ANN201 - shorthand for config.training
        return self.config.training

    def path(self, name: str) -> Path:
        return self.output_dir / name

    def resolved_dict(self) -> dict[str, Any]:
        """The config with every default filled in, the plugin sections included."""
        data = self.config.model_dump(mode="json")
        data["output"] = str(self.output_dir)
        data["savers"] = [s.name for s in self.savers]
        data["task_params"] = self.task_params.model_dump(mode="json")
        data["method_params"] = self.method_params.model_dump(mode="json")
        data["backend_params"] = self.backend_params.model_dump(mode="json")
        return data


def resolve(config: RunConfig, registry: Registry | None = None, source: str | None = None,
            purpose: str = "train") -> Run:
    """Look up the plugins a config names and validate their sections.

    ``purpose`` is ``train``, ``evaluate``, ``predict`` or ``validate``: only training needs
    training data and a model to start from.
    """
    registry = registry or get_registry()
    task = registry.get("task", config.task)
    method = registry.get("method", config.method)
    backend = registry.get("backend", config.backend)
    savers = list(dict.fromkeys(config.savers))
    mlflow_installed = "mlflow" in registry.objects["saver"]
    if config.save_as_mlflow_model and not mlflow_installed:
        raise PluginError("save_as_mlflow_model: true needs the mlflow saver, provided by the "
                          "adapt-mlflow distribution: pip install adapt-mlflow")
    if config.save_as_mlflow_model is not False and mlflow_installed and "mlflow" not in savers:
        savers.append("mlflow")
    saver_objs = [registry.get("saver", name) for name in savers]
    if task.engine not in ENGINES:
        raise PluginError(f"task {task.name!r} runs on engine {task.engine!r}, which this adapt-core "
                          f"does not have (engines: {', '.join(ENGINES)}); upgrade adapt-core")

    run = Run(
        config=config, task=task, method=method, backend=backend, savers=saver_objs,
        task_params=validate_params(task.Params, config.task_params, "task_params",
                                    f"task {task.name}", source),
        method_params=validate_params(method.Params, config.method_params, "method_params",
                                      f"method {method.name}", source),
        backend_params=validate_params(backend.Params, config.backend_params, "backend_params",
                                       f"backend {backend.name}", source),
        output_dir=config.output_dir(), registry=registry, source=source,
    )
    if run.launched:
        run.rank, run.world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    _check_combinations(run, purpose)
    return run


def _check_combinations(run: Run, purpose: str) -> None:
    config, t = run.config, run.config.training
    metrics = ("loss", *run.task.metrics) if run.task.eval_loss else run.task.metrics
    metric = t.metric_for_best_model.removeprefix("eval_")
    if metric == "loss" and not run.task.eval_loss and "metric_for_best_model" not in t.model_fields_set:
        t.metric_for_best_model = metric = run.task.metrics[0]  # the default, "loss", is not computed here
    if metric not in metrics:
        raise ConfigError(f"training.metric_for_best_model: {t.metric_for_best_model!r} is not a metric "
                          f"of task {run.task.name} (allowed: {', '.join(metrics)})")
    if purpose != "train":
        return
    if config.model.mlflow_model_path and not run.registry.pm.hook.adapt_model_source.get_hookimpls():
        raise PluginError("model.mlflow_model_path: reading an MLflow model folder needs the adapt-mlflow "
                          "distribution: pip install adapt-mlflow (or give model.path)")
    if not config.model.path and not config.model.mlflow_model_path:
        raise ConfigError("model: no model to adapt; give --model (a folder or hub id) or model.path")
    if config.model.path and config.model.mlflow_model_path:
        raise ConfigError("model: give either model.path or model.mlflow_model_path, not both")
    if not config.data.train:
        raise ConfigError("data.train: no training data; give --train FILE or data.train")
    has_validation = bool(config.data.validation or config.data.validation_split)
    if t.apply_early_stopping and (not has_validation or t.evaluation_strategy == "no"):
        raise ConfigError("training.apply_early_stopping needs evaluations: give validation data "
                          "(--validation or data.validation_split) and an evaluation_strategy")
    if t.save_strategy and t.save_strategy != "no" and has_validation and \
            t.evaluation_strategy != "no" and t.save_strategy != t.evaluation_strategy:
        raise ConfigError(f"training.save_strategy {t.save_strategy!r} must match evaluation_strategy "
                          f"{t.evaluation_strategy!r} so that the best checkpoint can be kept")


# ------------------------------------------------------------------------------------------
# The run folder


def check_output(run: Run) -> None:
    """Refuse to write into another run's folder unless resuming or told."""
    out = run.output_dir
    t = run.training
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output: {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not t.resume_from_checkpoint and not t.overwrite_output_dir:
        raise ConfigError(
            f"output: {out} already holds files (an earlier run?). To continue that run set "
            "training.resume_from_checkpoint=true; to start over choose another --output, or set "
            "training.overwrite_output_dir=true")


def prepare_output(run: Run) -> None:
    """Create the run folder (checked first, unless a launcher checked it before starting this
    worker) and record the resolved config and the status."""
    if not run.launched:
        check_output(run)
    run.output_dir.mkdir(parents=True, exist_ok=True)
    if run.is_main_process:
        text = yaml.safe_dump(run.resolved_dict(), sort_keys=False)
        run.path("config.yaml").write_text(text, encoding="utf-8")
        write_status(run, "running", started=time.time())


def write_status(run: Run, status: str, **extra: Any) -> None:
    """Record the run's status in run.json; a failed write (a full disk) is logged, never raised,
    so it cannot hide the error that ended the run."""
    if not run.is_main_process:
        return
    try:
        _write_status(run, status, **extra)
    except OSError as exc:
        log.warning("could not record status %r in %s: %s", status, run.path("run.json"), exc)


def _write_status(run: Run, status: str, **extra: Any) -> None:
    path = run.path("run.json")
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(status=status, updated=time.time(), **extra)
    if "command" not in data:
        data["command"] = sys.argv
        data["versions"] = _versions()
    write_json(path, data)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("adapt-core", "torch", "transformers", "peft", "datasets"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _not_cpu_choice(record: logging.LogRecord) -> bool:
    return "Setting accelerator to CPU" not in record.getMessage()


def setup_logging(run: Run | None = None, level: int = logging.INFO) -> logging.Handler | None:
    """Log to stderr, and to the run folder's train.log when there is a run."""
    logger = logging.getLogger("adapt")
    logger.setLevel(level)
    # bitsandbytes warns at import on CPUs with AVX512-bf16 that it cannot fetch an optional
    # kernel from the hub; adapt keeps 4-bit layers off that path anyway (adapt-methods).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # DeepSpeed, imported by transformers / MMEngine whether used or not, warns on every start
    # without a GPU that it chose the CPU; its logger sets its own level, so filter the message
    deepspeed = logging.getLogger("DeepSpeed")
    if _not_cpu_choice not in deepspeed.filters:
        deepspeed.addFilter(_not_cpu_choice)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_adapt", False) for h in logger.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("adapt: %(message)s"))
        stream._adapt = True  # type: ignore[attr-defined]
        logger.addHandler(stream)
    if run is not None:
        if run.rank:  # the other ranks' progress is rank 0's: on the terminal, only their warnings
            next(h for h in logger.handlers if getattr(h, "_adapt", False)).setLevel(logging.WARNING)
        name = "train.log" if run.rank == 0 else f"train.rank{run.rank}.log"
        file_handler = logging.FileHandler(run.path(name), encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
        for name in RUN_LOGGERS[1:]:  # "adapt" has it already
            logging.getLogger(name).addHandler(file_handler)
        return file_handler
    return None


def model_source(run: Run) -> str:
    """Where to load the pretrained model from: ``model.path``, or the local folder a pack makes
    of a reference the core cannot read itself (``model.mlflow_model_path``: adapt-mlflow)."""
    if run.model_path is None:
        m = run.config.model
        run.model_path = m.path
        if m.mlflow_model_path:
            run.model_path = run.registry.pm.hook.adapt_model_source(run=run, reference=m.model_dump())
            if not run.model_path:
                raise PluginError(f"model.mlflow_model_path: no installed pack can read {m.mlflow_model_path} "
                                  "(adapt-mlflow reads MLflow model folders: pip install adapt-mlflow)")
    return run.model_path


def model_run(model_dir: Path, overrides: list[str], purpose: str, registry: Registry | None = None) -> Run:
    """The Run that reloads a model folder written by a training run (its adapt.json holds the
    resolved config), with ``overrides`` (``dotted.key=value``) applied."""
    from adapt.config import apply_override, parse_config
    from adapt.saving import read_info

    data = read_info(model_dir)["config"]
    for assignment in overrides or []:
        apply_override(data, assignment)
    return resolve(parse_config(data, str(model_dir / "adapt.json")), registry, purpose=purpose)


def load_adapted(run: Run, source: str, meta: dict[str, Any]) -> LoadedModel:
    """The model as a run trains it: loaded by the task with the method's load options (e.g.
    quantization), then adapted by the method around the task's head."""
    run.load_options = run.method.load_options(run.method_params)
    loaded = run.task.load_model(run, source, meta)
    run.head_modules = run.task.head_modules(loaded.model)
    loaded.model = run.method.apply(loaded.model, run.method_params, run)
    return loaded


def load_for_training(run: Run) -> tuple[LoadedModel, dict[str, Any]]:
    """The adapted model a run trains, its savers checked, its trainable parameters reported."""
    loaded = load_adapted(run, model_source(run), run.task.inspect_data(run))
    for saver in run.savers:
        saver.check(loaded)
    params = parameter_report(loaded.model)
    run.summary.update(params)
    log.info("method %s: %s of %s parameters trainable (%.4f%%)", run.method.name,
             f"{params['trainable_parameters']:,}", f"{params['total_parameters']:,}", params["trainable_percent"])
    return loaded, params


def steps_per_epoch(run: Run, n_train: int) -> int:
    """Optimizer steps in one epoch over ``n_train`` rows, across processes and accumulation."""
    t = run.training
    batches = math.ceil(n_train / (t.per_device_train_batch_size * run.world_size))
    return max(1, math.ceil(batches / t.gradient_accumulation_steps))


def parameter_report(model: Any) -> dict[str, Any]:
    """Trainable / total parameter counts of a module (the method's footprint)."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        # bitsandbytes 4-bit weights are stored packed two values per byte
        if param.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if param.requires_grad:
            trainable += n
    return {"trainable_parameters": trainable, "total_parameters": total,
            "trainable_percent": round(100.0 * trainable / max(total, 1), 4)}


def train(run: Run) -> dict[str, Any]:
    """Train a resolved run and return its final metrics: the backend runs :func:`train_here` in
    each of its worker processes (the ``single`` backend: in this one)."""
    return run.backend.launch(lambda: train_here(run), run) or {}


def new_folder(run: Run) -> bool:
    """Whether this run starts a new folder (one it may remove if bad input stops it early)."""
    if run.launched:
        return os.environ[LAUNCHED_ENV] == "new"
    return not run.output_dir.exists() or not any(run.output_dir.iterdir())


def has_checkpoint(run: Run) -> bool:
    """Whether the engine wrote a checkpoint (HF: checkpoint-N/, MMEngine: iter_N.pth)."""
    folder = run.path("checkpoints")
    return any(folder.glob("checkpoint-*")) or any(folder.glob("*.pth"))


def train_here(run: Run) -> dict[str, Any]:
    """Train in this process (one worker of the run) and record what happened."""
    from adapt.engines import get_engine

    is_new = new_folder(run)
    prepare_output(run)
    handler = setup_logging(run)
    log.info("run folder: %s", run.output_dir)
    run.registry.notify("adapt_run_started", run=run)
    status, result = "failed", {}
    try:
        result = get_engine(run.task.engine).train(run) or {}
        status = "finished"
        return result
    except (KeyboardInterrupt, RunInterrupted):
        status = "interrupted"
        raise
    except AdaptError:
        # Bad input found before anything was trained: leave no folder that would block the
        # corrected rerun ("already holds files"). Anything else stays for inspection.
        if is_new and run.is_main_process and not has_checkpoint(run):
            shutil.rmtree(run.output_dir, ignore_errors=True)
            status = "removed"
        raise
    finally:
        if status != "removed":
            write_status(run, status, finished=time.time())
        reported = "failed" if status == "removed" else status
        run.registry.notify("adapt_run_finished", run=run, result={"status": reported, **result})
        if handler is not None:
            for name in RUN_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()
