"""Overhead of adapt on the MMEngine engine: the same detector training (mmdet's
retinanet_r18_fpn_1x_coco, random weights, 3 classes, 128 px drawn images, batch 2, AdamW 1e-4,
constant learning rate, gradient clipping 1.0, seed 42) through `adapt train` and through
bench/baseline_mmengine.py (a bare MMEngine Runner written by hand), alternated, median of
--repeat runs each.

    .venv/bin/python bench/vision.py [--iterations 10] [--repeat 3]

Prints the ratio of the training loops' wall time (``runner.train()``; goal <= 1.05x) and the
mean training loss of both (the same data order and initial weights: equal). Results go to
bench/results/vision.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "plugins" / "vision" / "tests")]
from compare import report  # noqa: E402


def adapt_run(train: str, iterations: int, out: str) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "adapt", "train", "--task", "object_detection", "--method", "full",
                    "--model", "retinanet_r18_fpn_1x_coco", "--train", train, "--output", out,
                    "--set", 'task_params.cfg_options={"model.backbone.init_cfg": null}',
                    "--set", "task_params.image_width=128", "--set", "task_params.image_height=128",
                    "--set", "task_params.apply_augmentations=false", "--set", f"training.max_steps={iterations}",
                    "--set", "training.per_device_train_batch_size=2", "--set", "training.learning_rate=1e-4",
                    "--set", "training.lr_scheduler_type=constant", "--set", "training.weight_decay=0",
                    "--set", "training.max_grad_norm=1.0", "--set", f"training.logging_steps={iterations}",
                    "--set", "training.save_strategy=no", "--set", "training.seed=42",
                    "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"],
                   check=True, capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    metrics = json.loads((Path(out) / "metrics.json").read_text())["train"]
    return {"train_loss": metrics["train_loss"], "train_runtime": metrics["train_runtime"], "process_seconds": seconds}


def baseline_run(train: str, iterations: int, out: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "baseline_mmengine.py"), train, out, str(iterations)],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT "))
    return {**result, "process_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import draw  # the vision tests' synthetic COCO data

    runs: dict[str, list[dict]] = {"adapt": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        train = str(draw.coco_detection(Path(tmp) / "coco", 32, seed=1, size=(128, 128)))
        for i in range(args.repeat):
            runs["baseline"].append(baseline_run(train, args.iterations, f"{tmp}/baseline{i}"))
            runs["adapt"].append(adapt_run(train, args.iterations, f"{tmp}/adapt{i}"))
    report("vision", runs, 1.05, "mean train loss", {"iterations": args.iterations, "repeat": args.repeat})

if __name__ == "__main__":
    main()
