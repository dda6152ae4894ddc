"""Does parameter-efficient adaptation of a pretrained detector work? Transfer between drawn domains.

A small RetinaNet (ResNet-18 layout at half width, 96 px) is pretrained once, from random weights,
on domain A (squares, discs and triangles in warm colours on grey noise) until its bbox mAP is at
least 0.5 (cached outside the repository, in ~/.cache/adapt-bench). It is then adapted to domain B
(other classes: crosses, rings, diamonds and bars, in any colour, on striped and coloured
backgrounds) with full, last_layer, ssf, lora and dora, the same iterations each, and trained from
scratch with the same iterations as the control. Each method runs through `adapt train` with its
defaults except the learning rate, which is its own (chosen by `--sweep`: the best validation mAP
of 3e-4, 1e-3, 3e-3, and 1e-2 for the parameter-efficient methods, after 150 iterations on the
detection task; the chosen values are written in LEARNING_RATES and used for all three tasks).

Instance segmentation (Mask R-CNN, small, mask mAP) and top-down pose (keypoint AP) repeat the
same with fewer methods and iterations.

    .venv/bin/python bench/detection_transfer.py [--quick] [--only detection|segmentation|pose] [--sweep]

Prints one table per task (test metric, trainable %, s/iter, peak tensor memory of training as the
run records it with training.skip_memory_metrics false, peak RSS of the training process, weights
+ gradients + optimizer state as `adapt plan` counts them) and the ratios to full
fine-tuning; writes bench/results/detection_transfer.json (or detection_transfer-quick.json).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("ADAPT_BENCH_CACHE", Path.home() / ".cache" / "adapt-bench")) / "detection_transfer"
CONFIGS = HERE / "configs"
METHODS = ("full", "last_layer", "ssf", "lora", "dora", "scratch")
# chosen by --sweep: the best validation mAP after 150 detection iterations of 3e-4, 1e-3, 3e-3 (and 1e-2 for the
# parameter-efficient methods, whose best was at the top of that range); scratch takes full fine-tuning's
LEARNING_RATES = {"full": 1e-3, "last_layer": 1e-2, "ssf": 3e-3, "lora": 3e-3, "dora": 1e-2, "scratch": 1e-3}
SIZE = 96
SWEEP_ITERATIONS = 150

# Domain A: squares, discs and triangles in colours of the first half of the hue circle (reds to greens); its
# backgrounds grey noise, colour gradients or checkerboards ("varied", the default) or grey noise and warm colours
# only ("narrow"). Domain B: crosses, rings, diamonds and bars in the other half (cyans to magentas, or any colour
# after a narrow A) on diagonal stripes or dot patterns.
DOMAIN_A = ("square", "disc", "triangle")
DOMAIN_B = ("cross", "ring", "diamond", "bar")
pretraining = "varied"  # set by --domain-a


def _colour(rng: random.Random, domain: str) -> tuple[int, ...]:
    if pretraining == "narrow":
        if domain == "A":
            return (rng.randint(180, 255), rng.randint(60, 160), rng.randint(0, 60))
        return tuple(rng.randint(0, 255) for _ in range(3))
    hue = rng.uniform(0.0, 0.5) if domain == "A" else rng.uniform(0.5, 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    return (int(r * 255), int(g * 255), int(b * 255))


def _background(rng: random.Random, domain: str) -> Image.Image:
    kinds = (("noise",) if pretraining == "narrow" else ("noise", "gradient", "checker")) if domain == "A" else \
        (("stripes",) if pretraining == "narrow" else ("stripes", "dots"))
    kind = rng.choice(kinds)
    if kind == "noise":
        image = Image.new("RGB", (SIZE, SIZE), (rng.randint(100, 150),) * 3)
        draw = ImageDraw.Draw(image)
        for _ in range(60):
            x, y, shade = rng.randrange(SIZE), rng.randrange(SIZE), rng.randint(70, 180)
            draw.point((x, y), fill=(shade,) * 3)
        return image
    base = tuple(rng.randint(40, 200) for _ in range(3))
    other = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in base)
    image = Image.new("RGB", (SIZE, SIZE), base)
    draw = ImageDraw.Draw(image)
    step = rng.randint(6, 14)
    if kind == "gradient":
        for y in range(SIZE):
            t = y / SIZE
            draw.line((0, y, SIZE, y), fill=tuple(int(a * (1 - t) + b * t) for a, b in zip(base, other, strict=True)))
    elif kind == "checker":
        for x in range(0, SIZE, step):
            for y in range(0, SIZE, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=other)
    elif kind == "stripes":
        for offset in range(-SIZE, SIZE, step):
            draw.line((offset, 0, offset + SIZE, SIZE), fill=other, width=step // 2)
    else:  # dots
        for x in range(0, SIZE, step):
            for y in range(0, SIZE, step):
                draw.ellipse((x, y, x + step // 3, y + step // 3), fill=other)
    return image


def _shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> tuple[list, tuple]:
    """Draw ``kind`` filling ``box``; return its polygon (for masks) and its box."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if kind == "square":
        poly = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif kind in ("disc", "ring"):
        poly = [(cx + w / 2 * math.cos(a / 16 * 2 * math.pi), cy + h / 2 * math.sin(a / 16 * 2 * math.pi))
                for a in range(16)]
    elif kind == "triangle":
        poly = [(cx, y0), (x1, y1), (x0, y1)]
    elif kind == "diamond":
        poly = [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    elif kind == "bar":
        poly = [(x0, cy - h / 6), (x1, cy - h / 6), (x1, cy + h / 6), (x0, cy + h / 6)]
    else:  # cross
        t, u = w / 6, h / 6
        poly = [(cx - t, y0), (cx + t, y0), (cx + t, cy - u), (x1, cy - u), (x1, cy + u), (cx + t, cy + u),
                (cx + t, y1), (cx - t, y1), (cx - t, cy + u), (x0, cy + u), (x0, cy - u), (cx - t, cy - u)]
    if kind == "ring":  # the background shows through: its mask is the outline's outer polygon
        draw.ellipse(box, outline=colour, width=max(2, int(w) // 6))
    else:
        draw.polygon(poly, fill=colour)
    if kind == "bar":
        return poly, (x0, cy - h / 6, x1, cy + h / 6)
    return poly, (x0, y0, x1, y1)


def draw_domain(folder: Path, n_images: int, seed: int, domain: str) -> Path:
    """A COCO file of ``n_images`` drawn images with 1-3 objects each (boxes and polygons)."""
    rng = random.Random(seed)
    classes = DOMAIN_A if domain == "A" else DOMAIN_B
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(n_images):
        image = _background(rng, domain)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 3)):
            label = rng.randrange(len(classes))
            w = h = rng.randint(SIZE // 5, SIZE // 2)
            x, y = rng.randint(0, SIZE - w - 1), rng.randint(0, SIZE - h - 1)
            colour = _colour(rng, domain)
            poly, (bx0, by0, bx1, by1) = _shape(draw, classes[label], (x, y, x + w, y + h), colour)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                                "bbox": [bx0, by0, bx1 - bx0, by1 - by0], "area": (bx1 - bx0) * (by1 - by0),
                                "iscrowd": 0, "segmentation": [[round(v, 1) for p in poly for v in p]]})
        file_name = f"{domain}_{seed}_{index}.png"
        image.save(folder / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": SIZE, "height": SIZE})
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def draw_pose(folder: Path, n_images: int, seed: int, domain: str) -> Path:
    """One figure per image with 5 keypoints: in A an upright 'person' of dots; in B a tilted,
    differently proportioned figure of other colours on a busy background."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    names = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
    for index in range(n_images):
        image = _background(rng, domain)
        draw = ImageDraw.Draw(image)
        w, h = rng.randint(SIZE // 3, SIZE // 2), rng.randint(SIZE // 2, SIZE - 10)
        x, y = rng.randint(0, SIZE - w - 1), rng.randint(0, SIZE - h - 1)
        body = _colour(rng, domain)
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=body)
        spread = 0.1 if domain == "A" else rng.uniform(0.0, 0.3)
        points = [(x + w / 2, y + h * 0.1), (x + w * spread, y + h * 0.45), (x + w * (1 - spread), y + h * 0.45),
                  (x + w * (0.25 + spread / 2), y + h * 0.9), (x + w * (0.75 - spread / 2), y + h * 0.9)]
        dots = ([(255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0), (0, 128, 255)] if domain == "A" else
                [(255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0), (128, 0, 255)])
        flat: list[float] = []
        for (px, py), colour in zip(points, dots, strict=True):
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
            flat += [round(px, 1), round(py, 1), 2]
        file_name = f"pose_{domain}_{seed}_{index}.png"
        image.save(folder / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": SIZE, "height": SIZE})
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": 1, "bbox": [x, y, w, h],
                            "area": w * h, "iscrowd": 0, "num_keypoints": 5, "keypoints": flat})
    categories = [{"id": 1, "name": "person", "keypoints": names, "skeleton": [[1, 2], [1, 3], [1, 4], [1, 5]]}]
    path = folder / "keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


TASKS = {
    "detection": {"task": "object_detection", "config": "transfer_retinanet.py", "metric": "mean_average_precision",
                  "draw": draw_domain, "methods": METHODS},
    "segmentation": {"task": "instance_segmentation", "config": "transfer_mask_rcnn.py",
                     "metric": "segm_mean_average_precision", "draw": draw_domain,
                     "methods": ("full", "last_layer", "ssf", "lora", "scratch")},
    "pose": {"task": "pose_detection", "config": "transfer_pose.py", "metric": "mean_average_precision",
             "draw": draw_pose, "methods": ("full", "last_layer", "ssf", "lora", "scratch")},
}


def train(spec: dict, out: Path, method: str, data: dict[str, str], iterations: int, lr: float,
          checkpoint: str | None, test: str | None = None, extra: list[str] | None = None) -> dict:
    """One `adapt train` run in its own process; its metrics, s/iter and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, str(HERE / "_peak.py"), "-m", "adapt", "train", "--task", spec["task"],
            "--method", "full" if method == "scratch" else method, "--model", str(CONFIGS / spec["config"]),
            "--train", data["train"], "--output", str(out),
            "--set", f"training.max_steps={iterations}", "--set", "training.per_device_train_batch_size=8",
            "--set", f"training.learning_rate={lr}", "--set", "training.save_strategy=no",
            "--set", f"training.logging_steps={max(1, iterations // 10)}", "--set", "training.seed=42",
            "--set", "training.eval_strategy=no", "--set", "training.skip_memory_metrics=false",
            "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"]
    if test:
        args += ["--set", f"data.test={test}"]
    if checkpoint:
        args += ["--set", f"task_params.checkpoint={checkpoint}"]
    for assignment in extra or []:
        args += ["--set", assignment]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{method}: adapt train failed:\n{proc.stderr[-3000:]}")
    peak = json.loads(next(x for x in proc.stdout.splitlines()[::-1] if x.startswith("PEAK ")).removeprefix("PEAK "))
    metrics = json.loads((out / "metrics.json").read_text())
    runtime = metrics["train"]["train_runtime"]
    return {"method": method, "learning_rate": lr, "iterations": iterations,
            "test": {k.removeprefix("test_"): v for k, v in metrics.get("test", {}).items()},
            "trainable_percent": metrics["trainable_percent"], "s_per_iter": runtime / iterations,
            "peak_tensor_mib": metrics.get("peak_tensor_memory_mib"),
            "peak_rss_mib": peak["maxrss_mib"], "process_seconds": seconds}


def plan_bytes(spec: dict, method: str, train_file: str, checkpoint: str | None) -> float:
    args = [sys.executable, "-m", "adapt", "plan", "--task", spec["task"], "--method",
            "full" if method == "scratch" else method, "--model", str(CONFIGS / spec["config"]), "--train", train_file,
            "--set", "tracking.enabled=false"]
    if checkpoint:
        args += ["--set", f"task_params.checkpoint={checkpoint}"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(proc.stdout)["total_mib"]


def pretrained(name: str, spec: dict, data: dict[str, str], iterations: int, goal: float) -> str:
    """The domain-A checkpoint, trained once (cached); its test metric must reach ``goal``."""
    folder = CACHE / f"{name}-{pretraining}-{iterations}"
    checkpoint = folder / "pretrained.pth"
    if checkpoint.is_file():
        return str(checkpoint)
    import torch
    from safetensors.torch import load_file

    done = folder / "run" / "metrics.json"
    if done.is_file() and (folder / "run" / "model" / "model.safetensors").is_file():  # trained, not yet kept
        result = {"test": {k.removeprefix("test_"): v for k, v in json.loads(done.read_text())["test"].items()}}
    else:
        result = train(spec, folder / "run", "scratch", data, iterations, LEARNING_RATES["scratch"], None,
                       test=data["test"])
    score = result["test"][spec["metric"]]
    print(f"pretrained {name} on domain A, {iterations} iterations: test {spec['metric']} {score:.3f}", flush=True)
    if score < goal:
        raise SystemExit(f"pretraining {name} reached {score:.3f} < {goal}: more iterations are needed")
    state = load_file(str(folder / "run" / "model" / "model.safetensors"))
    torch.save({"state_dict": state, "meta": {"domain": "A", spec["metric"]: score}}, checkpoint)
    (folder / "pretraining.json").write_text(json.dumps(result, indent=1))
    return str(checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations and methods: a smoke run of minutes")
    parser.add_argument("--only", choices=tuple(TASKS), action="append")
    parser.add_argument("--sweep", action="store_true", help="validation metric of each method at --rates")
    parser.add_argument("--rates", default="3e-4,1e-3,3e-3", help="the learning rates --sweep tries")
    parser.add_argument("--methods", help="only these methods (comma-separated)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every adaptation run (e.g. method_params.dropout=0); results go to a file of "
                             "their own")
    parser.add_argument("--domain-a", choices=("varied", "narrow"), default="varied",
                        help="pretraining domain: varied colours and backgrounds, or grey noise and warm colours only")
    args = parser.parse_args()
    global pretraining
    pretraining = args.domain_a
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, dict] = {}
    for name in args.only or tuple(TASKS):
        spec = TASKS[name]
        small = name != "detection"
        counts = {"A": (600 if pretraining == "varied" else 300, 60), "B": (160 if not small else 100, 80 if not small else 50)}
        pre_iters = {"detection": 2000, "segmentation": 1500, "pose": 1000}[name]
        iters = (40 if args.quick else (400 if not small else 250))
        root = CACHE / f"data-{pretraining}" / name
        a = {"train": str(spec["draw"](root / "A-train", counts["A"][0], 1, "A")),
             "test": str(spec["draw"](root / "A-test", counts["A"][1], 2, "A"))}
        b = {"train": str(spec["draw"](root / "B-train", counts["B"][0], 3, "B")),
             "validation": str(spec["draw"](root / "B-val", counts["B"][1] // 2, 4, "B")),
             "test": str(spec["draw"](root / "B-test", counts["B"][1], 5, "B"))}
        checkpoint = pretrained(name, spec, a, pre_iters, goal=0.5)
        methods = ("full", "ssf", "lora", "scratch") if args.quick else spec["methods"]
        if args.methods:
            methods = tuple(m for m in args.methods.split(",") if m in spec["methods"])
        if args.sweep:
            methods = tuple(m for m in methods if m != "scratch")  # scratch is full fine-tuning's recipe
        work = CACHE / f"runs-{pretraining}" / name
        rows = []
        if args.sweep:
            for method in methods:
                scores = {}
                for lr in map(float, args.rates.split(",")):
                    r = train(spec, work / f"sweep-{method}-{lr}", method, b, 40 if args.quick else SWEEP_ITERATIONS, lr,
                              None if method == "scratch" else checkpoint, test=b["validation"], extra=args.set)
                    scores[f"{lr:g}"] = r["test"][spec["metric"]]
                print(f"sweep {name} {method}: " + ", ".join(f"{lr}: {s:.3f}" for lr, s in scores.items()), flush=True)
                results.setdefault("sweep", {}).setdefault(name, {})[method] = scores
            continue
        for method in methods:
            r = train(spec, work / method, method, b, iters, LEARNING_RATES[method],
                      None if method == "scratch" else checkpoint, test=b["test"], extra=args.set)
            r["plan_total_mib"] = plan_bytes(spec, method, b["train"], None if method == "scratch" else checkpoint)
            rows.append(r)
            print(f"{name} {method}: {spec['metric']} {r['test'][spec['metric']]:.3f}, "
                  f"{r['trainable_percent']}% trainable, {r['s_per_iter']:.3f} s/iter", flush=True)
        results[name] = {"metric": spec["metric"], "iterations": iters, "pretraining_iterations": pre_iters,
                         "domain_a": pretraining, "settings": args.set,
                         "rows": rows}
        full = next(r for r in rows if r["method"] == "full")
        print(f"\n{name}: {iters} iterations on domain B from the domain-A checkpoint ({spec['metric']} on B's test)")
        print(f"{'method':<12}{'lr':>8}{spec['metric'][:12]:>14}{'x full':>8}{'trainable %':>13}{'s/iter':>8}"
              f"{'peak tensors MiB':>18}{'peak RSS MiB':>14}{'w+g+opt MiB':>13}")
        for r in rows:
            score = r["test"][spec["metric"]]
            print(f"{r['method']:<12}{r['learning_rate']:>8g}{score:>14.3f}"
                  f"{score / max(full['test'][spec['metric']], 1e-9):>8.2f}{r['trainable_percent']:>13.2f}"
                  f"{r['s_per_iter']:>8.3f}{r['peak_tensor_mib'] or float('nan'):>18.1f}{r['peak_rss_mib']:>14.0f}"
                  f"{r['plan_total_mib']:>13.1f}")
    out = HERE / "results" / (f"detection_transfer{'-narrow' if pretraining == 'narrow' else ''}"
                              f"{'-quick' if args.quick else ''}.json")
    if args.sweep:
        out = out.with_name(out.stem + "-sweep.json")
    if args.set:
        out = out.with_name(out.stem + "-" + "-".join(a.rsplit(".", 1)[-1].replace("=", "") for a in args.set) + ".json")
    if out.is_file():  # runs of other tasks, methods or rates are kept
        previous = json.loads(out.read_text())
        for key, value in results.items():
            if isinstance(value, dict) and isinstance(previous.get(key), dict) and key == "sweep":
                for task, rows in value.items():
                    for method, scores in rows.items():
                        previous["sweep"].setdefault(task, {}).setdefault(method, {}).update(scores)
            else:
                previous[key] = value
        results = previous
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
