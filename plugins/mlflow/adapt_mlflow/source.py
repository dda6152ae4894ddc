"""``model.mlflow_model_path``: start a run from an MLflow model folder, one saved by adapt (any
task) or a transformers-flavour model saved elsewhere (``mlflow.transformers.save_model``)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from adapt import ConfigError, ModelError, model_info, saved_run

log = logging.getLogger("adapt")
STAGE = "mlflow_source"  # in the run folder: the MLflow model as a folder tasks load


def _flavours(root: Path) -> dict[str, Any]:
    spec = root / "MLmodel"
    if not spec.is_file():
        raise ConfigError(f"model.mlflow_model_path: {root} is not an MLflow model folder (no MLmodel file)")
    try:
        return (yaml.safe_load(spec.read_text(encoding="utf-8")) or {}).get("flavors") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"model.mlflow_model_path: {spec} is not valid YAML: {exc}") from None


def _stage(run: Any) -> Path:
    """A fresh folder in the run folder; one per process, so ranks never wait on each other."""
    stage = run.path(STAGE if run.rank == 0 else f"{STAGE}.rank{run.rank}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def _link_files(folders: list[Path], stage: Path) -> None:
    """One folder a task can load (config, weights, tokenizer side by side), by symlinks."""
    for folder in folders:
        for item in folder.iterdir():
            if item.is_file() and not (stage / item.name).exists():
                os.symlink(item.resolve(), stage / item.name)


def model_source(run: Any, reference: dict[str, Any]) -> str | None:
    path = reference.get("mlflow_model_path")
    if not path:
        return None
    root = Path(path)
    flavours = _flavours(root)
    pyfunc = flavours.get("python_function") or {}
    if pyfunc.get("loader_module") == "adapt_mlflow.pyfunc":
        return _from_adapt(run, root / pyfunc.get("data", "model"))
    if "transformers" in flavours:
        spec = flavours["transformers"]
        model = root / (spec.get("model_binary") or "model")
        if not model.is_dir():
            raise ModelError(f"model.mlflow_model_path: {root} holds a transformers model saved by reference "
                             f"(source {spec.get('source_model_name')!r}, no weights in the folder); "
                             "give that model as model.path instead")
        stage = _stage(run)
        _link_files([model] + [root / "components" / c for c in spec.get("components") or []], stage)
        log.info("model.mlflow_model_path: the transformers model of %s", root)
        return str(stage)
    raise ModelError(f"model.mlflow_model_path: {root} has the flavour(s) {', '.join(flavours) or 'none'}; adapt "
                     "starts from MLflow models saved by adapt or with the transformers flavour")


def _from_adapt(run: Any, model_dir: Path) -> str:
    """An adapt model folder: a merged model loads as it is; an unmerged adapter is rebuilt on its
    base and merged into a plain model first."""
    info = model_info(model_dir)
    if info["format"] == "native":
        log.info("model.mlflow_model_path: the %s model in %s", info["task"], model_dir)
        return str(model_dir)
    saved = saved_run(model_dir, registry=run.registry)
    loaded = saved.load_saved(model_dir)
    params = saved.method_params
    if "merge_weights" in type(params).model_fields:  # saved unmerged by choice: merge it now
        params = params.model_copy(update={"merge_weights": True})
    merged = saved.method.merge(loaded.model, params)
    if merged is None:
        raise ModelError(f"model.mlflow_model_path: {model_dir} holds an unmerged {info['method']} adapter, "
                         f"which cannot be folded into its base model; start from that base "
                         f"({info['base_model']}) with model.path")
    loaded.model = merged
    stage = _stage(run)
    saved.task.save_model(loaded, str(stage))
    log.info("model.mlflow_model_path: merged the %s adapter of %s into %s", info["method"], model_dir, stage)
    return str(stage)
