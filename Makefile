# hubkit — run `make` for the list of targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hubkit-installed
NEWER := $(VENV)/newer-stack
PYTEST_ARGS ?=
DEMO_DIR ?= demo-out
DEMO_CROPS_DIR ?= demo-crops-out

.DEFAULT_GOAL := help
.PHONY: help install test demo demo-crops bench clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first, or pip pulls a multi-GB CUDA build for trl/peft: this machine's local wheel when it has one
	# (no download), else the CPU build from PyTorch's own index.
	if $(BIN)/python -m pip install -q --no-index --no-deps "torch==2.13.0" 2>/dev/null; then \
	    $(BIN)/python -m pip install -q "torch==2.13.0"; \
	else \
	    $(BIN)/python -m pip install -q "torch>=2.6,<2.15" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/python -m pip install -q -e ".[test]"
	# The newest transformers the index has, with what it needs, for tests/test_install.py (which installs it offline
	# beside the inference extra; skipped there when the index could not be reached here).
	-$(BIN)/python -m pip download -q --only-binary :all: -d $(NEWER) "transformers>5.17.0"
	touch $(STAMP)

install: $(STAMP) ## Create .venv with CPU torch and hubkit (editable) + test deps

test: install ## Run the offline CPU test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: install ## Offline: synthetic DICOM -> local hub -> train -> evaluate -> calibrate -> card -> pipeline -> predict
	$(BIN)/python -m hubkit.devkit.demo --out $(DEMO_DIR)

demo-crops: install ## Offline, realistic phantom: localiser -> crops at its points -> train -> pipeline -> predict
	$(BIN)/python -m hubkit.devkit.demo --crops --out $(DEMO_CROPS_DIR)

bench: install ## CPU benchmarks (results go in BENCHMARKS.md)
	$(BIN)/python bench/build_dataset.py

clean: ## Remove build outputs (keeps .venv)
	rm -rf build dist *.egg-info $(DEMO_DIR) $(DEMO_CROPS_DIR) .pytest_cache
