"""What the web app does, without the web: the form's fields from the installed plugins, a run
config from the form, runs started / watched / stopped as ``adapt train`` processes, the run
folders under one root, and ``adapt plan`` / ``compare`` / ``predict`` on them. Everything goes
through the ``adapt`` command, so a run started here is the run a terminal would start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from adapt import get_registry, run_config_model
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# The run config's plain sections shown as form fields (the plugins' own sections come from their Params).
FORM_SECTIONS = ("training", "data", "model")
SKIPPED = {"data": {"train", "validation", "test"}, "model": {"path"}}  # the form's own fields


@dataclass
class Field:
    """One form field: a config key with its default, help and allowed values (None: free text)."""

    key: str  # dotted: training.learning_rate, method_params.r
    default: Any
    help: str
    choices: list[str] | None = None
    kind: str = "text"  # text | bool | choice


def _choices(annotation: Any) -> list[str] | None:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    for arg in get_args(annotation):  # Literal[...] | None
        if get_origin(arg) is Literal:
            return [str(a) for a in get_args(arg)]
    return None


def params_fields(model: type[BaseModel], prefix: str, skip: set[str] = frozenset()) -> list[Field]:  # type: ignore[assignment]
    """The fields of a Params model (a plugin's or a config section's) as form fields."""
    fields = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        default = info.default if info.default is not PydanticUndefined else (
            info.default_factory() if info.default_factory else None)
        if isinstance(default, BaseModel):
            continue  # a nested section (e.g. FSDP options): the extra settings box takes it
        choices = _choices(info.annotation)
        kind = "bool" if info.annotation is bool else "choice" if choices else "text"
        fields.append(Field(f"{prefix}.{name}", default, (info.description or "").strip(), choices, kind))
    return fields


def form_fields(task: str | None, method: str | None, backend: str | None = None) -> dict[str, list[Field]]:
    """Per form section, the fields of the chosen task, method and backend and of the core sections."""
    registry = get_registry()
    sections: dict[str, list[Field]] = {}
    for kind, name in (("task", task), ("method", method), ("backend", backend)):
        if name and name in registry.names(kind):
            sections[f"{kind}_params"] = params_fields(registry.get(kind, name).Params, f"{kind}_params")
    config = run_config_model(registry)
    for section in FORM_SECTIONS:
        sections[section] = params_fields(config.model_fields[section].annotation, section, SKIPPED.get(section, set()))
    return sections


def text_value(value: Any) -> str:
    """A default as the form shows it (YAML, so that lists and dicts read as they are typed)."""
    if value is None:
        return ""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def parse_value(field: Field, text: Any) -> Any:
    """What the user typed, as a config value; ``...`` when it is the default (left out of the config)."""
    if field.kind == "bool":
        return ... if bool(text) == bool(field.default) else bool(text)
    if text is None or (isinstance(text, str) and not text.strip()):
        return ...
    try:
        value = text if field.kind == "choice" else yaml.safe_load(str(text))
    except yaml.YAMLError as exc:
        raise ValueError(f"{field.key}: {str(text)!r} is not a value ({str(exc).splitlines()[0]}); "
                         "write it as in a YAML config (4, 1e-4, [query, value], true)") from None
    if field.kind == "choice" and str(field.default) == str(value):
        return ...
    if field.kind != "choice" and value == field.default:
        return ...
    return value


def build_config(task: str, method: str, model: str, train: str, validation: str = "", test: str = "",
                 values: dict[str, Any] | None = None, extra: str = "", backend: str = "single") -> dict[str, Any]:
    """The run config of a filled form: the chosen plugins, the data, the fields that differ from
    their defaults, and the extra ``key=value`` lines (as ``--set`` takes them)."""
    config: dict[str, Any] = {"task": task, "method": method}
    if backend and backend != "single":
        config["backend"] = backend
    if model:
        config["model"] = {"path": model}
    data = {k: v for k, v in (("train", train), ("validation", validation), ("test", test)) if v}
    if data:
        config["data"] = data
    fields = {f.key: f for fields in form_fields(task, method, backend).values() for f in fields}
    for key, text in (values or {}).items():
        if key not in fields:
            continue
        value = parse_value(fields[key], text)
        if value is not ...:
            _set(config, key, value)
    for line in extra.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"extra settings: {line!r} is not key=value (e.g. training.warmup_steps=0.1)")
        key, _, text = line.partition("=")
        try:
            _set(config, key.strip(), yaml.safe_load(text) if text.strip() else None)
        except yaml.YAMLError:
            raise ValueError(f"extra settings: {line!r}: the value is not YAML (e.g. 0.1, [a, b], true)") from None
    return config


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def adapt_command(*args: str) -> list[str]:
    """The ``adapt`` command of this Python (the app's own install)."""
    return [sys.executable, "-m", "adapt", *args]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}


def run_command(*args: str, timeout: float = 600) -> tuple[int, str, str]:
    """Run ``adapt ARGS``; (exit code, stdout, stderr)."""
    done = subprocess.run(adapt_command(*args), capture_output=True, text=True, timeout=timeout, env=_environment())
    return done.returncode, done.stdout, done.stderr


def plan(config: dict[str, Any]) -> str:
    """``adapt plan`` of a form's config: its JSON, or the command's error message."""
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "run.yaml"
        file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        code, out, err = run_command("plan", "--config", str(file))
    return out if code == 0 else f"adapt plan failed (exit {code}):\n{err.strip()}"


@dataclass
class Job:
    """A run this app started: an ``adapt train`` process writing into ``output``."""

    name: str
    output: Path
    config_file: Path
    log_file: Path
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)
    stop_requested: bool = False

    def status(self) -> str:
        code = self.process.poll()
        if code is None:
            return "stopping (saving a checkpoint)" if self.stop_requested else "running"
        if code == 0:
            return "finished"
        if code == 130 or self.stop_requested:
            return f"stopped (exit {code}): resume it with training.resume_from_checkpoint=true"
        return f"failed (exit {code}): see the log"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop as Ctrl-C in a terminal does: the run saves a checkpoint and its folder, then exits."""
        if self.running():
            self.stop_requested = True
            os.killpg(self.process.pid, signal.SIGINT)

    def log(self, lines: int = 200) -> str:
        if not self.log_file.is_file():
            return ""
        text = self.log_file.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def start(runs_root: Path, config: dict[str, Any], name: str = "") -> Job:
    """Start ``adapt train`` on ``config`` into ``runs_root/NAME`` (a new name when none is given);
    its terminal output goes to ``runs_root/.ui/NAME.log``."""
    name = name.strip() or f"{config.get('task', 'run')}-{config.get('method', 'full')}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name.startswith("."):
        raise ValueError(f"run name {name!r}: give a plain folder name (no / and not starting with .)")
    output = runs_root / name
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"run name {name!r}: {output} already holds a run; choose another name")
    state = runs_root / ".ui"
    state.mkdir(parents=True, exist_ok=True)
    config_file, log_file = state / f"{name}.yaml", state / f"{name}.log"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with log_file.open("wb") as log:
        process = subprocess.Popen(adapt_command("train", "--config", str(config_file), "--output", str(output)),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=_environment(), start_new_session=True)
    return Job(name, output, config_file, log_file, process)


def list_runs(runs_root: Path) -> list[dict[str, Any]]:
    """The run folders under ``runs_root`` (those with a config.yaml), newest first: name, task,
    method, state and the first test or validation metric."""
    found = []
    if not runs_root.is_dir():
        return found
    for config in runs_root.glob("*/config.yaml"):
        folder = config.parent
        try:
            cfg = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            cfg = {}
        metrics = _read_json(folder / "metrics.json")
        state = _read_json(folder / "run.json").get("status") or "unknown"
        if state == "finished" and not (folder / "model" / "adapt.json").is_file():
            state = "finished without a model"
        summary = metrics.get("test") or metrics.get("validation") or {}
        headline = next(((k, v) for k, v in summary.items() if isinstance(v, (int, float))
                         and not k.endswith(("runtime", "per_second")) and k not in ("epoch", "step")), None)
        found.append({"name": folder.name, "path": str(folder), "task": cfg.get("task"), "method": cfg.get("method"),
                      "state": state, "metric": f"{headline[0]} {headline[1]:.4f}" if headline else "",
                      "modified": config.stat().st_mtime})
    return sorted(found, key=lambda r: r["modified"], reverse=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


def curves(folder: Path, png: Path) -> Path | None:
    """The run's curves from its metrics.jsonl so far (live while it trains; drawn again only when
    the file has grown); None before the first log."""
    from adapt import plot_curves

    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        return None
    if png.is_file() and png.stat().st_mtime >= metrics.stat().st_mtime:
        return png
    return png if plot_curves(metrics, png) else None


TRACKED_COLUMNS = ("name", "status", "started", "task", "method", "output", "metric")


def tracked_runs(limit: int = 50) -> tuple[list[list[Any]], str]:
    """The runs of the tracking store (``adapt runs --json``: adapt-mlflow's default store, or
    MLFLOW_TRACKING_URI), newest first, as table rows; and a note when there are none to show."""
    code, out, err = run_command("runs", "--json", "--limit", str(limit))
    if code != 0:
        message = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
        if "No such command" in err:
            message = "no tracking store: install adapt-mlflow to track every run"
        return [], message
    rows = []
    for run in json.loads(out):
        headline = next(((k, v) for k, v in (run.get("metrics") or {}).items() if k.startswith("test_")), None) \
            or next(iter((run.get("metrics") or {}).items()), None)
        rows.append([run.get("name"), run.get("status"), run.get("started"), run.get("task"), run.get("method"),
                     run.get("output"), f"{headline[0]} {headline[1]:.4f}" if headline else ""])
    return rows, "" if rows else "no tracked runs yet"


def pictures(folder: Path) -> list[str]:
    """The run's pictures: curves.png and the tasks' (pictures/*.png, e.g. a confusion matrix)."""
    return [str(p) for p in [folder / "curves.png", *sorted((folder / "pictures").glob("*.png"))] if p.is_file()]


def compare(folders: list[str]) -> str:
    """``adapt compare`` of run folders, as markdown, or the command's error message."""
    if len(folders) < 2:
        return "choose two runs or more to compare"
    code, out, err = run_command("compare", *folders)
    return out if code == 0 else f"adapt compare failed (exit {code}):\n{err.strip()}"


def _input_column(config: dict[str, Any], task: Any) -> tuple[str, bool]:
    """The column a plain text goes into (the task's first ``*_column``) and whether it takes words."""
    params = task.Params.model_fields
    given = config.get("task_params") or {}
    for name, info in params.items():
        if name.endswith("_column") and isinstance(info.default, str):
            return str(given.get(name, info.default)), name == "tokens_column"
    return "text", False


def predict_text(folder: Path, text: str) -> list[dict[str, Any]] | str:
    """``adapt predict`` of one input: a JSON object is the row itself; plain text goes into the
    task's text column (the first ``*_column`` of its parameters; split into words for token
    classification). The rows, or the command's error message."""
    text = text.strip()
    if not text:
        return "type a text (or a JSON row) to predict on"
    try:
        row = json.loads(text)
    except ValueError:
        row = None
    if not isinstance(row, dict):
        cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
        column, words = _input_column(cfg, get_registry().get("task", cfg["task"]))
        row = {column: text.split() if words else text}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "input.jsonl"
        data.write_text(json.dumps(row) + "\n", encoding="utf-8")
        return _predict(folder, data)


def predict_image(folder: Path, image: str, drawn: Path) -> tuple[list[dict[str, Any]] | str, str | None]:
    """``adapt predict`` of one image; for detection, segmentation and pose also the image with the
    predictions drawn (into ``drawn``, a folder). (rows or error message, drawn picture or None)."""
    cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    task = get_registry().get("task", cfg["task"])
    column = (cfg.get("task_params") or {}).get("image_column", "image")
    draws = "draw_folder" in task.Params.model_fields
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(image)
        copy = Path(tmp) / ("input" + (source.suffix.lower() or ".png"))
        copy.write_bytes(source.read_bytes())
        data = Path(tmp) / "input.jsonl"
        data.write_text(json.dumps({column: copy.name}) + "\n", encoding="utf-8")
        drawn.mkdir(parents=True, exist_ok=True)
        rows = _predict(folder, data, [f"task_params.draw_folder={drawn}"] if draws else [])
        picture = drawn / copy.name
        return rows, str(picture) if draws and picture.is_file() else None


def _predict(folder: Path, data: Path, overrides: list[str] = ()) -> list[dict[str, Any]] | str:  # type: ignore[assignment]
    code, out, err = run_command("predict", str(folder), "--data", str(data), *(x for o in overrides for x in ("--set", o)))
    if code != 0:
        return f"adapt predict failed (exit {code}):\n{err.strip()}"
    return [json.loads(line) for line in out.splitlines() if line.strip()]
