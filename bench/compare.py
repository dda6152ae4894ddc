"""What the side-by-side benchmarks share: medians of alternated runs, the ratios printed against
the baseline, and the results file."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def report(name: str, runs: dict[str, list[dict]], goal: float, loss: str, settings: dict[str, Any],
           limit_goal: float | None = None) -> None:
    """Print adapt's training-loop and whole-process time against the baseline's (medians, with
    the loop times' range) and both losses, and against a "bare loop" where runs has one (the
    physical limit: goal ``limit_goal``); write bench/results/<name>.json."""
    median = {who: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for who, rows in runs.items()}
    adapt, base = median["adapt"], median["baseline"]
    loop = adapt["train_runtime"] / base["train_runtime"]
    whole = adapt["process_seconds"] / base["process_seconds"]
    loss_diff = abs(adapt["train_loss"] - base["train_loss"])
    spread = {who: [min(r["train_runtime"] for r in rows), max(r["train_runtime"] for r in rows)]
              for who, rows in runs.items()}
    print(f"training loop: adapt {adapt['train_runtime']:.2f} s {spread['adapt']}, baseline {base['train_runtime']:.2f} s "
          f"{spread['baseline']} -> {loop:.3f}x (goal <= {goal}x)")
    print(f"whole process: adapt {adapt['process_seconds']:.2f} s, baseline {base['process_seconds']:.2f} s "
          f"-> {whole:.3f}x")
    print(f"{loss}: adapt {adapt['train_loss']:.6f}, baseline {base['train_loss']:.6f} (difference {loss_diff:.2e})")
    extra = {}
    if "bare loop" in median:
        bare = median["bare loop"]
        extra["limit_ratio"] = adapt["train_runtime"] / bare["train_runtime"]
        print(f"bare PyTorch loop: {bare['train_runtime']:.2f} s -> adapt's training loop {extra['limit_ratio']:.3f}x of "
              f"it (goal <= {limit_goal}x; its loss {bare['train_loss']:.6f}, other batches' order)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {**settings, "runs": runs, "median": median, "loop_ratio": loop, "process_ratio": whole,
         "loss_difference": loss_diff, **extra}, indent=2) + "\n")
