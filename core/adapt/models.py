"""A run's model: where it comes from, how the method adapts it, and the model folder a run
writes and ``adapt evaluate`` / ``adapt predict`` reload.

``<output>/model/`` always holds a model in one of two formats recorded in its ``adapt.json``:

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
from typing import TYPE_CHECKING, Any

from adapt.api import LoadedModel
from adapt.errors import ConfigError, ModelError, PluginError
from adapt.plugins import KNOWN_PROVIDERS

if TYPE_CHECKING:
    from adapt.run import Run

log = logging.getLogger("adapt")
INFO_FILE = "adapt.json"
ADAPTER_FILE = "adapter.safetensors"
CORE_MODEL_KEYS = ("path", "revision", "trust_remote_code", "attn_implementation")


def pack_references(config: Any) -> dict[str, Any]:
    """The model keys packs added (``model.mlflow_model_path``...) that the config sets."""
    return {k: v for k, v in config.model if k not in CORE_MODEL_KEYS and v not in (None, "")}


def check_reference(config: Any) -> None:
    """A run that trains needs exactly one model reference."""
    extra = pack_references(config)
    if not config.model.path and not extra:
        raise ConfigError("model: no model to adapt; give --model (a folder or hub id) or model.path")
    if config.model.path and extra:
        raise ConfigError(f"model: give either model.path or model.{next(iter(extra))}, not both")


def model_source(run: Run) -> str:
    """Where to load the pretrained model from: the local folder an installed pack makes of the
    reference (``adapt_model_source``, asked for every reference), else ``model.path``."""
    if run.model_path is None:
        model = run.config.model
        answer = run.registry.pm.hook.adapt_model_source(run=run, reference=model.model_dump())
        extra = pack_references(run.config)
        if not answer and extra:
            key, value = next(iter(extra.items()))
            provider = KNOWN_PROVIDERS["config"].get(f"model.{key}")
            hint = f" ({provider} reads it: pip install {provider})" if provider else ""
            raise PluginError(f"model.{key}: no installed pack can read {value}{hint}")
        run.model_path = answer or model.path
    return run.model_path


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


def model_load_options(run: Run) -> dict[str, Any]:
    """The model section's options for a transformers ``from_pretrained`` (attention kernels)."""
    m = run.config.model
    return {"attn_implementation": m.attn_implementation} if m.attn_implementation else {}


def load_adapted(run: Run, source: str, meta: dict[str, Any]) -> LoadedModel:
    """The model as a run trains it: loaded by the task with the method's load options (e.g.
    quantization), then adapted by the method around the task's head."""
    run.load_options = {**model_load_options(run), **run.method.load_options(run.method_params)}
    loaded = run.task.load_model(run, source, meta)
    run.head_modules = run.task.head_modules(loaded.model)
    loaded.model = run.method.apply(loaded.model, run.method_params, run)
    return loaded


# ------------------------------------------------------------------------------------------
# The model folder


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


def save_model_folder(run: Run, loaded: LoadedModel, folder: Path, fmt: str) -> None:
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


def save_outputs(run: Run, loaded: LoadedModel) -> LoadedModel:
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
    """The ``adapt.json`` of a model folder: its format, task, method, base model, meta and config."""
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a model saved by adapt train (no {INFO_FILE}); "
                         "give a run folder or its model/ folder")
    return json.loads(path.read_text(encoding="utf-8"))


def load_saved(run: Run, model_dir: str | Path) -> LoadedModel:
    """Reload the model folder written by :func:`save_model_folder`."""
    from safetensors.torch import load_file

    info = read_info(model_dir)
    meta = info.get("meta") or {}
    if info["format"] == "native":
        run.load_options = model_load_options(run)
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
