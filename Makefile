# The two commands of the README: `make demo` and `make test`. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0 (CPU build on machines whose pip index carries it; on a laptop without a GPU,
# `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` avoids the multi-GB CUDA build).
TORCH_INDEX ?=
STAMP := $(VENV)/.installed-stamp
BIN := $(VENV)/bin

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the embedded service, a tiny model, a real GRPO job: watch reward and kl move
	HF_HUB_OFFLINE=1 $(BIN)/grpo demo

test: lint  ## lint, then every test (unit, integration on Postgres + Redis, end to end)
	$(BIN)/pytest

bench: $(STAMP)  ## the benchmarks of BENCHMARKS.md (about 8 minutes; needs Postgres, Redis and wrk, which it installs)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) grpo-data .pytest_cache .mypy_cache .ruff_cache
