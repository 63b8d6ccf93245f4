# k8s-gpu-mcp — every target creates .venv itself and installs into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
TOOLS  := .tools/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(TOOLS):$(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv tools lint test fuzz bench demo image image-test zipapp clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create .venv with the agent, broker and dev extras

$(TOOLS)/kubectl $(TOOLS)/helm $(TOOLS)/kubernetes-mcp-server: .ci/fetch_tools.py | $(STAMP)
	$(PY) .ci/fetch_tools.py $(TOOLS)

tools: $(STAMP) $(TOOLS)/kubectl $(TOOLS)/kubernetes-mcp-server  ## fetch real kubectl, helm, kubernetes-mcp-server into .tools/bin

lint: $(STAMP)  ## ruff + mypy --strict on agent/ and broker/
	$(BIN)/ruff check agent broker tests .ci
	$(BIN)/ruff format --check agent broker tests .ci
	$(BIN)/mypy

test: lint tools  ## lint, then the whole pytest suite
	$(BIN)/pytest -q

fuzz: $(STAMP)  ## the long fuzz runs: agent protocol, broker stdio and HTTP (FUZZ_EXAMPLES=N scales the agent's)
	$(BIN)/pytest -q -m fuzz

bench: $(STAMP) tools  ## performance figures vs the budgets in ARCHITECTURE.md (BENCH_NODES=1000 skips the 5,000-node step)
	$(PY) -m tests.bench

demo: $(STAMP) tools  ## run the product on the simulated cluster
	$(PY) -m broker.cli.demo

zipapp: $(STAMP)  ## rebuild the agent zipapp the chart carries (needs python3.13; commit it)
	$(PY) .ci/build_zipapp.py

image: $(STAMP)  ## build the agent image with buildah (local Debian base when offline)
	bash .ci/build-image.sh

image-test: image  ## build the image, then test the agent inside it
	$(BIN)/pytest -q -m image tests/image

clean:  ## remove the venv, fetched tools and caches
	rm -rf $(VENV) .tools .image .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
