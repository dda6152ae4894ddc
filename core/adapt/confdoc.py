"""Render config models as commented YAML (``adapt config show``) and as a markdown reference."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from adapt.config import run_config_model
from adapt.plugins import KINDS, get_registry


def _default(info: Any) -> Any:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()
    else:
        return None
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _allowed(info: Any) -> str:
    text = str(info.annotation)
    if "Literal[" in text:
        inner = text[text.index("Literal[") + 8: text.index("]", text.index("Literal["))]
        return f" Allowed: {inner.replace(chr(39), '')}."
    return ""


def model_yaml(model: type[BaseModel], indent: int = 0, overrides: dict[str, Any] | None = None,
               chosen: dict[str, dict[str, tuple[Any, str]]] | None = None) -> list[str]:
    """Commented YAML lines for every field of ``model``, with its default; ``chosen`` holds, per
    nested section, the values adapt chooses instead and why (``training``: resolve.training_defaults)."""
    pad = " " * indent
    lines: list[str] = []
    mine = (chosen or {}).get("", {})
    for name, info in model.model_fields.items():
        help_text = (info.description or "").strip() + _allowed(info)
        if help_text:
            lines.append(f"{pad}# {help_text}")
        annotation = info.annotation
        if name in mine:
            value, why = mine[name]
            lines.append(f"{pad}# {why} (TrainingConfig's own: {_scalar(_default(info))})")
            lines.append(f"{pad}{name}: {_scalar(value)}")
        elif overrides and name in overrides:
            lines.append(f"{pad}{name}: {_scalar(overrides[name])}")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.extend(model_yaml(annotation, indent + 2, chosen={"": (chosen or {}).get(name, {})}))
        else:
            default = _default(info)
            lines.append(f"{pad}{name}: {'' if default is None and info.is_required() else _scalar(default)}")
    return lines


def show_config(task: Any, method: Any, backend: Any, model: str | None = None) -> str:
    """A complete, commented run config for a task / method / backend (and model, which picks the
    method's defaults for its kind), every default filled."""
    from adapt.api import MODEL_KINDS
    from adapt.config import parse_config
    from adapt.resolve import training_defaults

    overrides = {"task": task.name, "method": method.name, "backend": backend.name, **({"model": model} if model else {})}
    kind = task.model_kind(parse_config(overrides))
    head = [f"# adapt run config: task {task.name}, method {method.name}, backend {backend.name}"
            + (f", model {model}" if model else ""),
            "# Every parameter with its default. Keep only what you change."]
    if kind is None:
        kinds = sorted(k for k in method.training_defaults if k != "*")
        head.append("# The method's defaults depend on the kind of model (--model picks it): "
                    + "; ".join(f"{MODEL_KINDS.get(k, k)}: "
                                + ", ".join(f"{n} {_scalar(v)}" for n, v in method.training_defaults[k].items())
                                for k in kinds))
    lines = model_yaml(run_config_model(get_registry()), overrides=overrides,
                       chosen={"training": training_defaults(task, method, kind)})
    out: list[str] = []
    for line in lines:
        key = line.split(":", 1)[0]
        plugin = {"task_params": task, "method_params": method, "backend_params": backend}.get(key)
        if plugin is None:
            out.append(line)
            continue
        fields = plugin.Params.model_fields
        out.append(f"{key}:" + ("" if fields else " {}"))
        out.extend(model_yaml(plugin.Params, 2))
    return "\n".join(head + out) + "\n"


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("adapt.config.", "")


def model_markdown(model: type[BaseModel], title: str) -> str:
    """A markdown table of a config model's fields (name, type, default, description)."""
    rows = [f"### {title}", "", "| key | type | default | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        annotation = _type_name(info.annotation).replace("|", "\\|")
        default = _default(info)
        default_text = "(required)" if info.is_required() else json.dumps(default, default=str)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            default_text = f"see {name}"
        rows.append(f"| `{name}` | `{annotation}` | `{default_text}` | "
                    f"{(info.description or '').replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def reference_markdown() -> str:
    """The configuration reference (docs/config-reference.md): the config's sections (with the keys
    installed packs add), then each installed task, method, backend, saver and engine with its own
    parameters."""
    registry = get_registry()
    config = run_config_model(registry)
    parts = ["# Configuration reference", "",
             "Generated from the config models by `python -m adapt.confdoc > docs/config-reference.md`",
             "(`make docs`); a test fails when this file is out of date. `adapt config show --task T",
             "--method M` prints the same as a commented YAML file. Keys that an installed pack adds",
             "name the pack in brackets.", "", model_markdown(config, "Top level")]
    for name, info in config.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            parts.append(model_markdown(info.annotation, name))
    section = {"task": "task_params", "method": "method_params", "backend": "backend_params"}
    for kind in KINDS:
        parts.append(f"## {kind.capitalize()}s\n")
        for name in registry.names(kind):
            obj = registry.get(kind, name)
            owner = registry.owner(kind, name)
            parts.append(f"### {kind} `{name}` ({owner.label if owner else 'unknown'})\n\n{obj.description}\n")
            if obj.Params.model_fields and section.get(kind):
                parts.append(model_markdown(obj.Params, f"`{section[kind]}` of {name}").split("\n", 2)[2])
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
