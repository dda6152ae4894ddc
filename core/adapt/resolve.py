"""Resolving a config against the installed plugins: the task, method, backend, savers and engine
it names, their parameter sections validated, and the combinations that cannot work refused
before anything runs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapt.api import MODEL_KINDS
from adapt.config import (
    RunConfig,
    TrainingConfig,
    apply_override,
    build_config,
    parse_config,
    run_config_model,
    validate_params,
)
from adapt.errors import ConfigError, PluginError
from adapt.models import check_reference, read_info
from adapt.plugins import KNOWN_PROVIDERS, Registry, get_registry
from adapt.run import Run

log = logging.getLogger("adapt")


def resolve(config: RunConfig, registry: Registry | None = None, source: str | None = None,
            purpose: str = "train") -> Run:
    """Look up the plugins a config names and validate their sections.

    ``purpose`` is ``train``, ``evaluate``, ``predict`` or ``validate``: only training needs
    training data and a model to start from.
    """
    registry = registry or get_registry()
    if type(config) is not run_config_model(registry):  # parsed for other plugins: check the keys they added
        config = parse_config(config.model_dump(exclude_unset=True), source, registry)
    task = registry.get("task", config.task)
    method = registry.get("method", config.method)
    backend = registry.get("backend", config.backend)
    names = list(dict.fromkeys(config.savers))
    names += [name for name, saver in sorted(registry.objects["saver"].items())
              if name not in names and saver.default_for(config)]
    savers = [registry.get("saver", name) for name in names]
    engine = _engine(registry, task, backend)
    run = Run(
        config=config, task=task, method=method, backend=backend, engine=engine, savers=savers,
        task_params=validate_params(task.Params, config.task_params, "task_params", f"task {task.name}", source),
        method_params=validate_params(method.Params, config.method_params, "method_params",
                                      f"method {method.name}", source),
        backend_params=validate_params(backend.Params, config.backend_params, "backend_params",
                                       f"backend {backend.name}", source),
        output_dir=config.output_dir(), registry=registry, source=source,
    )
    if run.launched:
        run.rank, run.world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    _apply_training_defaults(run)
    _check_combinations(run, purpose)
    return run


def run_from_config(path: str | Path, overrides: Sequence[str] = (), purpose: str = "validate") -> Run:
    """The resolved Run of a config file with ``--set`` style overrides, as ``adapt train`` builds
    it, without running anything (for tools that emit or check runs: adapt launch, adapt ui)."""
    return resolve(build_config(path, overrides=tuple(overrides)), source=str(path), purpose=purpose)


def training_defaults(task: Any, method: Any, kind: str | None) -> dict[str, tuple[Any, str]]:
    """The ``training`` values adapt chooses for a task, method and kind of model (None: unknown),
    each with why: the method's for that kind first, then the method's for any kind, then the
    task's. Fields not named keep TrainingConfig's defaults (HF TrainingArguments')."""
    out: dict[str, tuple[Any, str]] = {}
    for name, value in task.training_defaults.items():
        out[name] = (value, f"task {task.name}'s default")
    for name, value in method.training_defaults.get("*", {}).items():
        out[name] = (value, f"method {method.name}'s default")
    if kind is not None:
        for name, value in method.training_defaults.get(kind, {}).items():
            out[name] = (value, f"method {method.name}'s default for {MODEL_KINDS.get(kind, kind)}")
    return out


def _apply_training_defaults(run: Run) -> None:
    """Fill the training fields the config does not set with adapt's choices for this task,
    method and model (``run.defaults`` records each and why); a value the user set always wins.
    The choices are validated like the user's values but not marked as set, so that a config
    dumped without them (``run.resolved_dict(chosen=False)``) resolves to the same choices again."""
    t = run.training
    kind = run.task.model_kind(run.config)
    for name, (value, why) in training_defaults(run.task, run.method, kind).items():
        if name not in TrainingConfig.model_fields:
            raise PluginError(f"{why}: training.{name} is not a training parameter (a bug in its pack)")
        if name not in t.model_fields_set:
            setattr(t, name, value)
            t.model_fields_set.discard(name)
            run.defaults[name] = why


def _engine(registry: Registry, task: Any, backend: Any) -> Any:
    """The engine the task names, checked against the task's Params and the backend's strategy."""
    if task.engine not in registry.objects["engine"]:
        provider = KNOWN_PROVIDERS["engine"].get(task.engine)
        where = f" (provided by the {provider} distribution: pip install {provider})" if provider else ""
        installed = ", ".join(registry.names("engine")) or "none"
        raise PluginError(f"task {task.name!r} runs on engine {task.engine!r}, which is not installed{where}; "
                          f"installed engines: {installed}")
    engine = registry.get("engine", task.engine)
    if not issubclass(task.Params, engine.task_params):
        raise PluginError(f"task {task.name!r} runs on engine {engine.name!r}, whose tasks' parameters subclass "
                          f"{engine.task_params.__name__}; {task.Params.__name__} does not (a bug in the task's pack)")
    if backend.strategy is not None and backend.strategy not in engine.strategies:
        drives = ", ".join(sorted(engine.strategies)) or "none"
        raise ConfigError(f"backend {backend.name} ({backend.strategy}) does not drive the {engine.name} engine of task "
                          f"{task.name}; that engine runs in one process (backend single) or with the strategies: {drives}")
    return engine


def _check_combinations(run: Run, purpose: str) -> None:
    config, t = run.config, run.config.training
    metrics = ("loss", *run.task.metrics) if run.task.eval_loss else run.task.metrics
    metric = t.metric_for_best_model.removeprefix("eval_")
    if metric == "loss" and not run.task.eval_loss and "metric_for_best_model" not in t.model_fields_set:
        t.metric_for_best_model = metric = run.task.metrics[0]  # the default, "loss", is not computed here
    if metric not in metrics:
        raise ConfigError(f"training.metric_for_best_model: {t.metric_for_best_model!r} is not a metric "
                          f"of task {run.task.name} (allowed: {', '.join(metrics)})")
    if purpose == "validate" and config.data.train:  # a complete config: what only training would check
        _check_data_settings(run)
    if purpose != "train":
        return
    check_reference(config)
    if not config.data.train:
        raise ConfigError("data.train: no training data; give --train FILE or data.train")
    _check_data_settings(run)


def _check_data_settings(run: Run) -> None:
    """The training settings that depend on which data splits the config gives."""
    config, t = run.config, run.config.training
    if config.data.validation_split and not run.task.carves_validation:
        raise ConfigError(f"data.validation_split: task {run.task.name} takes validation data as its own file "
                          "(--validation FILE)")
    has_validation = bool(config.data.validation or config.data.validation_split)
    if t.apply_early_stopping and (not has_validation or t.evaluation_strategy == "no"):
        raise ConfigError("training.apply_early_stopping needs evaluations: give validation data "
                          "(--validation or data.validation_split) and an evaluation_strategy")
    if t.save_strategy and t.save_strategy != "no" and has_validation and \
            t.evaluation_strategy != "no" and t.save_strategy != t.evaluation_strategy:
        raise ConfigError(f"training.save_strategy {t.save_strategy!r} must match evaluation_strategy "
                          f"{t.evaluation_strategy!r} so that the best checkpoint can be kept")


def saved_run(model_dir: str | Path, overrides: Sequence[str] = (), purpose: str = "predict",
              registry: Registry | None = None) -> Run:
    """The Run that reloads a model folder written by a training run (its adapt.json holds the
    resolved config; ``run.load_saved(model_dir)`` then loads it), with ``overrides``
    (``dotted.key=value``) applied. Keys and savers of packs that are not installed now (a folder
    written with adapt-mlflow) play no part in reloading and are left out."""
    registry = registry or get_registry()
    model_dir = Path(model_dir)
    data = read_info(model_dir)["config"]
    schema = run_config_model(registry)
    # the saved config was valid when it was written: a key the schema lacks now is a pack's that is not installed
    sections = {None: schema, **{name: schema.model_fields[name].annotation for name in ("model", "data", "training")}}
    for section, model in sections.items():
        node = data if section is None else data.get(section)
        for key in [k for k in node or {} if k not in model.model_fields]:
            where = f"{section}.{key}" if section else key
            log.debug("%s: %s belongs to %s, which is not installed; left out", model_dir, where,
                      KNOWN_PROVIDERS["config"].get(where, "a pack"))
            del node[key]
    data["savers"] = [s for s in data.get("savers") or [] if s in registry.objects["saver"]]
    for assignment in overrides:
        apply_override(data, assignment)
    return resolve(parse_config(data, str(model_dir / "adapt.json"), registry), registry, purpose=purpose)
