"""``adapt compare``: finished runs of one task side by side, read from their run folders: the test
metric, trainable share, seconds per step, peak tensor memory and adapter size, the best run per
criterion, and (as an HTML page) their curves overlaid."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from adapt.errors import ConfigError
from adapt.models import ADAPTER_FILE, read_info

# criterion -> (column title, lower is better)
COLUMNS = {"trainable_percent": ("trainable %", True), "s_per_step": ("s/step", True),
           "peak_tensor_memory_mib": ("peak tensors MiB", True), "adapter_mib": ("adapter MiB", True)}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def run_row(folder: Path) -> dict[str, Any]:
    """One run's numbers, from its folder (metrics.json, metrics.jsonl, model/)."""
    if not (folder / "metrics.json").is_file():
        raise ConfigError(f"{folder} is not a finished run folder of adapt train (no metrics.json)")
    metrics = _read_json(folder / "metrics.json")
    info = read_info(folder / "model") if (folder / "model").is_dir() else {}
    config = info.get("config") or {}
    records = _records(folder / "metrics.jsonl")
    steps = [r.get("step", 0) for r in records]
    runtime = (metrics.get("train") or {}).get("train_runtime")
    adapter = folder / "model" / ADAPTER_FILE
    if info.get("format") == "adapter" and adapter.is_file():
        adapter_mib, adapter_note = adapter.stat().st_size / 2**20, "saved adapter"
    else:  # merged into the model: what the adapter would weigh unmerged, its trainable tensors in fp32
        adapter_mib, adapter_note = metrics.get("trainable_parameters", 0) * 4 / 2**20, "trainable tensors, fp32"
    return {"run": str(folder), "task": config.get("task") or info.get("task"), "method": config.get("method"),
            "data": config.get("data") or {}, "test": metrics.get("test") or {},
            "trainable_percent": metrics.get("trainable_percent"),
            "s_per_step": runtime / max(steps) if runtime and steps and max(steps) else None,
            "peak_tensor_memory_mib": metrics.get("peak_tensor_memory_mib"), "adapter_mib": adapter_mib,
            "adapter_note": adapter_note, "curves": _curves(records)}


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (none if it is missing; unreadable lines skipped)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key in ("loss", "eval_loss"):
            if isinstance(record.get(key), (int, float)) and "step" in record:
                series.setdefault(key, []).append((record["step"], float(record[key])))
    return series


def _metric(rows: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """The test metric to compare: the task's first metric (else the loss) and whether lower is better."""
    from adapt.plugins import get_registry

    task = get_registry().get("task", rows[0]["task"])
    for name in [*task.metrics, "loss"]:
        if all(f"test_{name}" in r["test"] for r in rows):
            return f"test_{name}", name in task.lower_is_better
    return None, False


def compare(folders: list[Path]) -> dict[str, Any]:
    """The comparison of ``folders`` (runs of one task): rows, the metric compared, the best run per
    criterion and notes (settings the runs differ in besides the method)."""
    if len(folders) < 2:
        raise ConfigError("adapt compare needs at least two run folders")
    rows = [run_row(Path(f)) for f in folders]
    tasks = sorted({str(r["task"]) for r in rows})
    if len(tasks) > 1:
        raise ConfigError(f"adapt compare compares runs of one task; these are of {', '.join(tasks)}")
    metric, lower = _metric(rows)
    best: dict[str, str] = {}
    criteria = ([(metric, lower)] if metric else []) + [(k, low) for k, (_, low) in COLUMNS.items()]
    for key, low in criteria:
        values = [(r["test"].get(key) if key == metric else r[key], r["run"]) for r in rows]
        values = [(v, run) for v, run in values if isinstance(v, (int, float))]
        if values:
            best[key] = (min if low else max)(values)[1]
    notes = [f"the runs differ in data.{split}: {', '.join(sorted({str(r['data'].get(split)) for r in rows}))}"
             for split in ("train", "validation", "test") if len({str(r["data"].get(split)) for r in rows}) > 1]
    return {"task": tasks[0], "metric": metric, "rows": rows, "best": best, "notes": notes}


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _table(report: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """The report's column titles, rows of cells and notes: what markdown and the page both show."""
    metric = report["metric"]
    titles = ["run", "method", *([metric] if metric else []), *(t for t, _ in COLUMNS.values())]
    rows = [[r["run"], str(r["method"]), *([_cell(r["test"].get(metric))] if metric else []),
             *(_cell(r[k]) for k in COLUMNS)] for r in report["rows"]]
    names = {metric: metric, **{k: t for k, (t, _) in COLUMNS.items()}}
    notes = [f"best {names[k]}: {run}" for k, run in report["best"].items()]
    notes += [f"note: {n}" for n in report["notes"]]
    notes.append("adapter MiB: the saved adapter of a run saved unmerged; of a merged run, its trainable tensors in fp32")
    if any(r["peak_tensor_memory_mib"] is None for r in report["rows"]):
        notes.append("peak tensors -: not measured (recorded on a GPU; on the CPU with training.skip_memory_metrics: false)")
    return titles, rows, notes


def markdown(report: dict[str, Any]) -> str:
    titles, rows, notes = _table(report)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join([*lines, "", *(f"- {n}" for n in notes)]) + "\n"


def page(report: dict[str, Any]) -> str:
    """A self-contained HTML page (no scripts, no network): the table and the runs' curves overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for ax, key, title in zip(axes[0], ("loss", "eval_loss"), ("training loss", "validation loss"), strict=True):
        for r in report["rows"]:
            points = r["curves"].get(key) or []
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2,
                        label=f"{r['method']} ({Path(r['run']).name})")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    titles, cells, notes = _table(report)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    image = base64.b64encode(buffer.getvalue()).decode()
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>adapt compare: {html.escape(report['task'])}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
            f"<h1>{html.escape(report['task'])}: {len(report['rows'])} runs</h1><table><tr>{head}</tr>"
            f"{rows}</table><ul>{items}</ul><img alt='curves' src='data:image/png;base64,{image}'></body></html>\n")


def sweep(train_args: list[str], methods: list[str], rates: list[float | None], folder: Path) -> dict[str, Any]:
    """Run ``adapt train`` once per method (and learning rate) into ``folder``/<method>[-lr<rate>], each
    in its own process, then compare the runs that finished and write compare.md / compare.html there.
    A run that fails is reported and left out; the others are kept."""
    import subprocess
    import sys

    finished, failed = [], []
    for method in methods:
        for rate in rates:
            name = method if rate is None else f"{method}-lr{rate:g}"
            command = [sys.executable, "-m", "adapt", "train", *train_args, "--method", method,
                       "--output", str(folder / name), *(["--set", f"training.learning_rate={rate}"] if rate else [])]
            print(f"adapt sweep: {name} ({len(finished) + len(failed) + 1} of {len(methods) * len(rates)})",
                  file=sys.stderr, flush=True)
            # the run's own output goes to the terminal's stderr; stdout stays for the sweep's result
            if subprocess.run(command, stdout=subprocess.DEVNULL).returncode == 0:
                finished.append(folder / name)
            else:
                failed.append(name)
    if len(finished) < 2:
        raise ConfigError(f"adapt sweep: {len(finished)} run(s) finished ({', '.join(failed)} failed: see their "
                          f"train.log under {folder}); nothing to compare")
    report = compare(finished)
    report["notes"] += [f"{name} failed (see {folder / name / 'train.log'})" for name in failed]
    (folder / "compare.md").write_text(markdown(report), encoding="utf-8")
    (folder / "compare.html").write_text(page(report), encoding="utf-8")
    return report
