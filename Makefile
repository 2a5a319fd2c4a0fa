# Quick start targets: each one sets itself up on a fresh machine (venv + install).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch (on the dev/CI machines this wheel comes from local disk).
TORCH_SPEC ?= torch==2.13.0
# Triton of the GPU machine (3.6); on CPU the kernel tests run it as an interpreter (TRITON_INTERPRET=1).
TRITON_SPEC ?= triton==3.6.0

.PHONY: setup run test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]" "$(TRITON_SPEC)"
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/muse bench stage1 --device cpu --references phase2_nomix --eval-curve-tokens 4096 --eval-every 64 \
		--eval-stride 128 --final-eval-tokens 32768

lint: setup
	$(BIN)/ruff check muse verification benchmarks tests scripts

test: lint
	$(BIN)/python -m pytest -q -n auto tests
	$(BIN)/muse verify --profile ci --device cpu --out runs/verify-ci

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
