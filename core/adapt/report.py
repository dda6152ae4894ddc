"""The run's curves: training loss, validation loss and metrics against the step, as a PNG."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(metrics_jsonl: Path, png: Path) -> bool:
    """Plot every numeric series of metrics.jsonl; return False when there is nothing to plot."""
    if not metrics_jsonl.is_file():
        return False
    series: dict[str, list[tuple[int, float]]] = {}
    for line in metrics_jsonl.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)) or key.endswith(
                    ("runtime", "per_second", "_flos", "learning_rate", "grad_norm")):
                continue
            series.setdefault(key, []).append((record["step"], float(value)))
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = {k: v for k, v in series.items() if k.endswith("loss")}
    others = {k: v for k, v in series.items() if k not in losses}
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(11 if others else 6, 4), squeeze=False)
    for ax, group, title in zip(axes[0], (losses, others), ("loss", "metrics"), strict=False):
        for key, points in sorted(group.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
