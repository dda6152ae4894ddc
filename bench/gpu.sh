#!/usr/bin/env bash
# The GPU acceptance check, run on a lent GPU machine (one GPU, no network, Python 3.12 with torch
# 2.11 / transformers 5.17 preinstalled). Prepare here first: `bash bench/gpu-wheels.sh` (the
# missing wheels in .whl/, MiniLM's config in .gpu/); the device tool carries both (carry: .whl, .gpu).
#
#     bash bench/gpu.sh tests     # install + every test marked gpu              (about 5 minutes)
#     bash bench/gpu.sh bench     # install + GPU benchmarks (overhead, methods)  (about 4 minutes)
#     bash bench/gpu.sh all       # both (about 8 minutes)
#
# Every step has a hard time limit (timeout); a step that fails or runs out is recorded and the
# next one runs. Results: $OUT (the device tool's folder) or bench/results: gpu-steps.jsonl, each
# step's log, gpu-junit.xml, the benchmarks' json, and gpu.json + gpu.md (bench/gpu_report.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-all}
RESULTS=${OUT:-bench/results}
SITE=${ADAPT_GPU_SITE:-/tmp/adapt-site}
MODELS=${ADAPT_GPU_MODELS:-/tmp/adapt-gpu-models}
PY=${PYTHON:-python3}
mkdir -p "$RESULTS"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1 \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=2

step() {  # step NAME SECONDS COMMAND...: run with a hard limit, log to $RESULTS/gpu-NAME.log, record the outcome
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s%N)
  echo "== $name (limit ${limit} s)"
  timeout --kill-after=15 "$limit" "$@" > "$RESULTS/gpu-$name.log" 2>&1
  rc=$?
  printf '{"step": "%s", "rc": %d, "seconds": %d.%03d, "limit": %d, "timed_out": %s}\n' "$name" "$rc" \
    $((($(date +%s%N) - start) / 1000000000)) $(((($(date +%s%N) - start) / 1000000) % 1000)) "$limit" \
    "$([ $rc = 124 ] || [ $rc = 137 ] && echo true || echo false)" >> "$RESULTS/gpu-steps.jsonl"
  tail -n 5 "$RESULTS/gpu-$name.log"
  return 0
}

install_site() {  # a function: step runs it through bash (timeout runs programs)
  rm -rf "$SITE" && mkdir -p "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || return 1
  # adapt's own packs, from this source tree (setuptools from the wheels above builds them)
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" \
    . plugins/nlp plugins/methods plugins/vision plugins/backends || return 1
  "$PY" - <<'EOF'
import importlib.metadata as md, json, torch
names = ["torch", "torchvision", "transformers", "accelerate", "peft", "timm", "bitsandbytes", "deepspeed",
         "mmengine", "mmdet", "mmpose", "datasets", "pydantic", "adapt-core"]
found = {}
for name in names:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        found[name] = None
print(json.dumps({"python": __import__("sys").version.split()[0], "cuda": torch.version.cuda,
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "versions": found}))
EOF
  "$PY" -m adapt plugins
}

: > "$RESULTS/gpu-steps.jsonl"
nvidia-smi -L > "$RESULTS/gpu-nvidia-smi.log" 2>&1 || true
export -f install_site
export PY SITE
step install 150 bash -c install_site

if [ "$PART" = tests ] || [ "$PART" = all ]; then
  step tests 330 "$PY" -m pytest -m gpu -n 4 --dist loadgroup -p no:cacheprovider -rA --timeout 300 --junitxml="$RESULTS/gpu-junit.xml" \
    tests/test_gpu.py plugins/vision/tests/test_gpu.py plugins/backends/tests/test_backends.py
fi

if [ "$PART" = bench ] || [ "$PART" = all ]; then
  step models 90 "$PY" bench/gpu_models.py .gpu/minilm "$MODELS"
  step overhead 120 "$PY" bench/overhead.py --model "$MODELS/minilm" --steps 40 --repeat 1 --results overhead-gpu
  step methods-minilm 150 "$PY" bench/methods.py --model "$MODELS/minilm" --results methods-gpu.json \
    --methods full,last_layer,lora,dora,ssf,qlora,qdora,qssf,lora+gc,qlora+gc,ia3,vera,oft
  step methods-llama 150 "$PY" bench/methods.py --model "$MODELS/llama-1b" --causal-lm --results methods-gpu-llama.json \
    --methods full,lora,dora,ssf,qlora,qdora,qssf
  for f in overhead-gpu.json methods-gpu.json methods-gpu-llama.json; do
    [ -f "bench/results/$f" ] && [ "$RESULTS" != bench/results ] && cp "bench/results/$f" "$RESULTS/"
  done
fi

"$PY" bench/gpu_report.py "$RESULTS"
