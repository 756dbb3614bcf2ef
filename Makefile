# Solar-farm pipeline. `make help` lists the targets.
# Each stage target is its manifest file; the CLI also skips a stage whose config digest and
# inputs are unchanged, so re-running a target that is up to date costs about a second.

RUN     ?= demo
CONFIG  ?= configs/$(RUN).yaml
DATA    ?= data
R       := $(DATA)/runs/$(RUN)
PY      := .venv/bin/python
VENV    := .venv/.installed
CLI     := $(PY) -m pipeline
ARGS    ?=
PYTEST_ARGS ?=

STAGES := labels fetch tiles train map predict attribute audit triage report

.DEFAULT_GOAL := help
.PHONY: help venv world $(STAGES) demo all test test-fast lint format bench \
        shortcut-experiment noisy-labels-experiment browser clean-run status

help: ## List targets (RUN=<name> picks configs/<name>.yaml; default demo)
	@echo "usage: make <target> [RUN=<name>] [ARGS='--set section.key=value']"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN{FS=":.*## "}{printf "  %-22s %s\n", $$1, $$2}'

# PyTorch comes from the default index (CUDA wheels on Linux, about 4 GB of them). On a machine
# without a GPU, CPU wheels save most of that: make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

$(VENV): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(if $(TORCH_INDEX),$(PY) -m pip install torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev,demo,planetary-computer,tensorboard]"
	touch $@

venv: $(VENV) ## Create .venv: the package, its extras (demo data, PC signing, TensorBoard), dev tools

# A config may inherit its world section (extends:), so ask the loader, not grep, whether it has one.
HAS_WORLD := $(PY) -c 'import sys; from pipeline.config import load_config; \
	sys.exit(load_config(sys.argv[1]).world is None)'

world: $(VENV) ## Build the demo world of configs/$(RUN).yaml (no-op for real configs)
	@if $(HAS_WORLD) $(CONFIG); then $(CLI) world --config $(CONFIG) $(ARGS); fi

$(R)/labels/manifest.json: $(CONFIG) world $(VENV)
	$(CLI) labels --config $(CONFIG) $(ARGS)
$(R)/fetch/manifest.json: $(R)/labels/manifest.json
	$(CLI) fetch --config $(CONFIG) $(ARGS)
$(R)/tiles/manifest.json: $(R)/fetch/manifest.json
	$(CLI) tiles --config $(CONFIG) $(ARGS)
$(R)/train/manifest.json: $(R)/tiles/manifest.json
	$(CLI) train --config $(CONFIG) $(ARGS)
$(R)/map/manifest.json: $(R)/train/manifest.json
	$(CLI) map --config $(CONFIG) $(ARGS)
$(R)/predict/manifest.json: $(R)/train/manifest.json
	$(CLI) predict --config $(CONFIG) $(ARGS)
# attribute runs after map: its mapped_farms target explains the map's farm patches
$(R)/attribute/manifest.json: $(R)/predict/manifest.json $(R)/map/manifest.json
	$(CLI) attribute --config $(CONFIG) $(ARGS)
$(R)/audit/manifest.json: $(R)/attribute/manifest.json
	$(CLI) audit --config $(CONFIG) $(ARGS)
$(R)/triage/manifest.json: $(R)/audit/manifest.json $(R)/map/manifest.json
	$(CLI) triage --config $(CONFIG) $(ARGS)
$(R)/report/manifest.json: $(R)/audit/manifest.json $(R)/map/manifest.json $(R)/triage/manifest.json
	$(CLI) report --config $(CONFIG) $(ARGS)

labels: $(R)/labels/manifest.json ## OSM solar farms -> farms.gpkg, plan.gpkg
fetch: $(R)/fetch/manifest.json ## Sentinel-2 L2A patches from STAC (10-band COGs)
tiles: $(R)/tiles/manifest.json ## Masks on each patch grid, spatial splits, band stats
train: $(R)/train/manifest.json ## Lightning U-Net (resumes from its last checkpoint)
map: $(R)/map/manifest.json ## Map the whole area on Dask: probability/provenance COGs, farms.gpkg
predict: $(R)/predict/manifest.json ## Probability/mask COGs, farm polygons, evaluation
attribute: $(R)/attribute/manifest.json ## Attribution COGs (saliency, IG, SHAP, ...)
audit: $(R)/audit/manifest.json ## Spurious-cue reliance, counterfactuals, sanity checks
triage: $(R)/triage/manifest.json ## Review tasks: farms OSM misses, OSM farms the model does not find
report: $(R)/report/manifest.json ## Self-contained HTML report

demo: $(VENV) ## Install, then run every stage on the demo world and say where results are
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory report RUN=$(RUN) && \
	echo "demo finished in $$(( $$(date +%s) - start )) s" && \
	echo "results: $(R)/  (open $(R)/report/index.html; GeoTIFFs under $(R)/map, $(R)/predict and $(R)/attribute)"

all: demo

browser: ## Install headless Chromium for the report test (Debian packages; needs root)
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "chromium could not be installed; the browser test will skip"; fi

test: $(VENV) browser ## Run the test suite (includes an end-to-end run on a reduced demo world)
	$(PY) -m pytest -m "not gpu and not network" $(PYTEST_ARGS)

test-fast: $(VENV) ## The test suite without the slow tests
	$(PY) -m pytest -m "not gpu and not network and not slow" $(PYTEST_ARGS)

lint: $(VENV) ## ruff (lint + format check) and mypy
	$(PY) -m ruff check pipeline tests
	$(PY) -m ruff format --check pipeline tests
	$(PY) -m mypy

format: $(VENV) ## Apply ruff's formatter and fixes
	$(PY) -m ruff format pipeline tests
	$(PY) -m ruff check --fix pipeline tests

bench: $(VENV) ## Benchmarks (fetch, train/infer, attribution, map); results in data/bench/
	$(PY) -m pipeline.bench all

shortcut-experiment: $(VENV) ## Train confounded and clean models (3 seeds each, configs/shortcut*.yaml) and audit them
	$(PY) -m pipeline.experiments.shortcut $(ARGS)

noisy-labels-experiment: $(VENV) ## Baseline vs retraining with the ignore mask and hard negatives from its triage (3 seeds, demo world)
	$(PY) -m pipeline.experiments.noisy_labels $(ARGS)

status: $(VENV) ## Each stage of RUN: done, stale (what changed) or missing
	@$(CLI) status --config $(CONFIG) $(ARGS)

clean-run: ## Delete data/runs/$(RUN)
	rm -rf $(R)
