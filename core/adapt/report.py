"""The run's pictures: its curves (training loss, validation loss and metrics against the step), and the
tasks' pictures of predictions (a confusion matrix for classification)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_curves(metrics_jsonl: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, float]]]]:
    """Each numeric series of metrics.jsonl as (step, value) points: those logged during training,
    and those of the evaluations after it (the best checkpoint, the test split), which come after
    the training summary record (the one with train_runtime, whose train_loss is the run's mean)."""
    series: dict[str, list[tuple[int, float]]] = {}
    final: dict[str, list[tuple[int, float]]] = {}
    after_training = False
    for line in metrics_jsonl.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "train_runtime" in record:
            after_training = True
            continue
        for key, value in record.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)) or key.endswith(
                    ("runtime", "per_second", "_flos", "learning_rate", "grad_norm")):
                continue
            (final if after_training else series).setdefault(key, []).append((record["step"], float(value)))
    return series, final


def plot_curves(metrics_jsonl: Path, png: Path) -> bool:
    """Plot the curves of metrics.jsonl (losses on one axis, metrics on another; the evaluations
    after training as points, not as the end of a line); False when there is nothing to plot."""
    if not metrics_jsonl.is_file():
        return False
    series, final = read_curves(metrics_jsonl)
    if not series and not final:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = set(series) | set(final)
    losses = sorted(k for k in names if k.endswith("loss"))
    others = sorted(k for k in names if k not in losses)
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(14 if others else 7, 4.5), squeeze=False)
    for ax, group, title in zip(axes[0], (losses, others), ("loss", "metrics"), strict=False):
        for key in group:
            if key in series:
                points = series[key]
                line, = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key)
                color = line.get_color()
            else:
                color = None
            if key in final:
                points = final[key]
                ax.plot([p[0] for p in points], [p[1] for p in points], linestyle="none", marker="*", markersize=11,
                        color=color, label=None if color else key)
        ax.set_xlabel("step")
        ax.set_title(title + (" (\u2605 after training: the best model, the test split)" if final else ""), fontsize=10)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def confusion_matrix_figure(truth: Any, predicted: Any, labels: list[str], title: str = "confusion matrix") -> Any:
    """A confusion matrix of class indices as a matplotlib Figure (rows: true class, columns:
    predicted; counts), for the classification tasks' pictures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    matrix = confusion_matrix(truth, predicted, labels=list(range(len(labels))))
    side = min(4 + 0.45 * len(labels), 16)
    fig, ax = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay(matrix, display_labels=labels).plot(ax=ax, colorbar=False, cmap="Blues",
                                                                xticks_rotation=45 if len(labels) > 4 else "horizontal")
    ax.set_title(f"{title} ({int(matrix.sum())} rows, accuracy {matrix.trace() / max(matrix.sum(), 1):.3f})")
    fig.tight_layout()
    return fig


def examples_figure(columns: dict[str, list[str]], title: str, count: int = 6, width: int = 44) -> Any:
    """A table of the first ``count`` rows of ``columns`` (e.g. prediction beside reference), each
    cell's text wrapped at ``width`` characters and cut at six lines: a text task's picture."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    rows = min(count, *(len(v) for v in columns.values())) if columns else 0

    def cell(text: Any) -> str:
        lines = textwrap.wrap(str(text), width) or [""]
        return "\n".join(lines[:6] + (["..."] if len(lines) > 6 else []))

    cells = [[cell(columns[name][i]) for name in names] for i in range(rows)]
    heights = [max(c.count("\n") + 1 for c in row) for row in cells] or [1]
    fig, ax = plt.subplots(figsize=(3.6 * max(len(names), 1) + 0.6, 0.6 + 0.22 * (sum(heights) + 2 * len(heights))))
    ax.axis("off")
    if cells:
        table = ax.table(cellText=cells, colLabels=names, loc="upper center", cellLoc="left", colLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        total = sum(heights) + len(heights) + 1
        for (row, _), box in table.get_celld().items():
            box.set_height((1 if row == 0 else heights[row - 1] + 1) / total)
    ax.set_title(title, fontsize=10)
    return fig


def save_figures(folder: Path, split: str, figures: dict[str, Any]) -> list[Path]:
    """Write each figure as ``folder/<split>_<name>.png`` and close it."""
    import matplotlib.pyplot as plt

    written = []
    for name, fig in figures.items():
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{split}_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def majority_class_accuracy(truth: Any) -> dict[str, float]:
    """``{"accuracy": ...}`` of always predicting the most frequent of ``truth``'s class indices:
    the baseline a classifier's accuracy is read against."""
    import numpy as np

    counts = np.bincount(np.asarray(truth, dtype=int).ravel())
    return {"accuracy": float(counts.max() / max(counts.sum(), 1))} if counts.size else {}
