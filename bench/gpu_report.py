"""The GPU check's summary (bench/gpu.sh): its steps, every gpu test's outcome and time, and the GPU
benchmarks' headline numbers, into RESULTS/gpu.json and a short table in RESULTS/gpu.md (printed).

    python bench/gpu_report.py RESULTS_DIR
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def tests(junit: Path) -> list[dict]:
    """Each test case of pytest's junit xml: its id, outcome, seconds and the first line of a failure."""
    if not junit.is_file():
        return []
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome, message = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind], found.get("message", "")
                break
        rows.append({"test": f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}", "outcome": outcome,
                     "seconds": float(case.get("time", 0)), "message": message.splitlines()[0][:300] if message else ""})
    return rows


def methods(path: Path) -> list[dict]:
    data = _json(path)
    keep = ("method", "device", "trainable_percent", "s_per_step", "peak_tensors_mib")
    return [{k: r.get(k) for k in keep} for r in (data or {}).get("rows", [])]


def main(results: str) -> None:
    root = Path(results)
    steps = [json.loads(x) for x in (root / "gpu-steps.jsonl").read_text().splitlines() if x.strip()] \
        if (root / "gpu-steps.jsonl").is_file() else []
    env = next((json.loads(x) for x in (root / "gpu-install.log").read_text().splitlines() if x.startswith('{"python"')),
               None) if (root / "gpu-install.log").is_file() else None
    overhead = _json(root / "overhead-gpu.json")
    report = {"environment": env, "steps": steps, "tests": tests(root / "gpu-junit.xml"),
              "overhead": {k: overhead.get(k) for k in ("loop_ratio", "process_ratio", "limit_ratio", "loss_difference")}
              if overhead else None,
              "methods_minilm": methods(root / "methods-gpu.json"), "methods_llama_1b": methods(root / "methods-gpu-llama.json")}
    (root / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")

    lines = [f"GPU check: {(env['gpu'] or 'no GPU seen') if env else 'no environment recorded'}"
             + (f", torch {env['versions']['torch']} (CUDA {env['cuda']}), transformers {env['versions']['transformers']}"
                if env else ""), "", "| step | rc | seconds | limit |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['step']} | {s['rc']}{' (timed out)' if s['timed_out'] else ''} | {s['seconds']:.0f} | {s['limit']} |"
              for s in steps]
    if report["tests"]:
        counts = {o: sum(t["outcome"] == o for t in report["tests"]) for o in ("passed", "failed", "error", "skipped")}
        lines += ["", "tests: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n), "",
                  "| test | outcome | seconds |", "| --- | --- | --- |"]
        lines += [f"| {t['test']} | {t['outcome']}{': ' + t['message'] if t['outcome'] in ('failed', 'error') else ''} "
                  f"| {t['seconds']:.1f} |" for t in report["tests"]]
    if overhead:
        o = report["overhead"]
        lines += ["", f"overhead (random MiniLM, LoRA, 40 steps): training loop {o['loop_ratio']:.3f}x the hand-written "
                      f"Trainer script, whole process {o['process_ratio']:.3f}x"
                  + (f", {o['limit_ratio']:.3f}x a bare loop" if o.get("limit_ratio") else "")]
    for name, rows in (("random MiniLM", report["methods_minilm"]), ("random Llama-1B", report["methods_llama_1b"])):
        if rows:
            lines += ["", f"methods on the {name}: peak tensor memory = torch.cuda.max_memory_allocated",
                      "| method | trainable % | s/step | peak MiB |", "| --- | --- | --- | --- |"]
            lines += [f"| {r['method']} | {r['trainable_percent']:.3f} | {r['s_per_step']:.4f} | {r['peak_tensors_mib']:.0f} |"
                      for r in rows]
            by = {r["method"]: r for r in rows}
            if "qlora" in by and "lora" in by:
                lines.append(f"qlora / lora peak memory: {by['qlora']['peak_tensors_mib'] / by['lora']['peak_tensors_mib']:.2f}x "
                             "(goal <= 0.5x)")
    text = "\n".join(lines) + "\n"
    (root / "gpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1])
