"""The run's model folder and the chosen savers.

``<output>/model/`` always holds a model that ``adapt evaluate`` / ``adapt predict`` reload, in
one of two formats recorded in its ``adapt.json``:

- ``native``: the method merged (or never added) its modules; the task saved the plain model
  in its own format (``save_pretrained`` for HF models);
- ``adapter``: the adaptation is kept apart (``merge_weights: false``, or merging impossible):
  ``adapter.safetensors`` holds the trainable parameters and all buffers, and reloading means
  base model -> method.apply -> these tensors. Works for every method, ours or a plugin's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from adapt.api import LoadedModel
from adapt.errors import ModelError

log = logging.getLogger("adapt")
INFO_FILE = "adapt.json"
ADAPTER_FILE = "adapter.safetensors"


def _base_reference(path: str | None) -> str | None:
    if path and Path(path).exists():
        return str(Path(path).resolve())
    return path


def adapter_state(model: Any) -> dict[str, Any]:
    """The tensors that differ from the base model: trainable parameters and all buffers."""
    full = model.state_dict()
    keep = {name for name, p in model.named_parameters() if p.requires_grad}
    keep.update(name for name, _ in model.named_buffers())
    return {name: t.detach().cpu().contiguous().clone() for name, t in full.items() if name in keep}


def save_model_folder(run: Any, loaded: LoadedModel, folder: Path, fmt: str) -> None:
    """Write the reloadable model folder atomically (a partial write is never picked up)."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if fmt == "native":
        run.task.save_model(loaded, str(tmp))
    else:
        save_file(adapter_state(loaded.model), str(tmp / ADAPTER_FILE))
        if hasattr(loaded.processor, "save_pretrained"):
            loaded.processor.save_pretrained(str(tmp))
    info = {"format": fmt, "task": run.task.name, "method": run.method.name,
            "base_model": _base_reference(run.model_path), "meta": loaded.meta,
            "config": run.resolved_dict()}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def save_outputs(run: Any, loaded: LoadedModel) -> LoadedModel:
    """Merge where the method can, write ``model/``, then each saver's ``saved/<name>/``."""
    merged = run.method.merge(loaded.model, run.method_params)
    final = LoadedModel(merged, loaded.processor, loaded.meta, loaded.state) if merged is not None else loaded
    fmt = "native" if merged is not None else "adapter"
    save_model_folder(run, final, run.path("model"), fmt)
    log.info("model saved to %s (%s)", run.path("model"), fmt)
    for saver in run.savers:
        folder = run.path("saved") / saver.name
        folder.mkdir(parents=True, exist_ok=True)
        written = saver.save(final, str(folder), run)
        log.info("saver %s wrote %s", saver.name, ", ".join(str(p) for p in written))
    return final


def read_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a model saved by adapt train (no {INFO_FILE}); "
                         "give a run folder or its model/ folder")
    return json.loads(path.read_text(encoding="utf-8"))


def load_run_model(run: Any, model_dir: str | Path) -> LoadedModel:
    """Reload the model folder written by :func:`save_model_folder`."""
    from safetensors.torch import load_file

    from adapt.run import load_adapted

    info = read_info(model_dir)
    meta = info.get("meta") or {}
    if info["format"] == "native":
        run.load_options = {}
        return run.task.load_model(run, str(model_dir), meta)
    base = info["base_model"]
    if base and not Path(base).is_absolute() and (Path(model_dir) / base).is_dir():
        base = str(Path(model_dir) / base)  # a base shipped inside the folder (an MLflow model)
    loaded = load_adapted(run, base, meta)
    state = load_file(str(Path(model_dir) / ADAPTER_FILE))
    unknown = sorted(set(state) - set(loaded.model.state_dict()))
    if unknown:
        raise ModelError(f"{model_dir}: the saved adapter does not fit the model rebuilt from "
                         f"{info['base_model']} with method {info['method']} (unknown tensors: "
                         f"{', '.join(unknown[:5])}{'...' if len(unknown) > 5 else ''})")
    loaded.model.load_state_dict(state, strict=False)
    return loaded
