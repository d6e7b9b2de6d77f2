# The two commands of the README: `make demo` and `make test`. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0 (CPU build on machines whose pip index carries it; on a laptop without a GPU,
# `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` avoids the multi-GB CUDA build).
TORCH_INDEX ?=
STAMP := $(VENV)/.installed-stamp
BIN := $(VENV)/bin

.PHONY: help demo test unit lint format bench clean chromium

help:  ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## /\1\t/' | expand -t 10

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the embedded service, a tiny model, a real GRPO job: watch reward and kl move
	HF_HUB_OFFLINE=1 $(BIN)/grpo demo

test: lint chromium  ## lint, then every test (unit, integration on Postgres + Redis, end to end, the dashboard in Chromium)
	$(BIN)/pytest

unit: $(STAMP)  ## the fast tests alone (pure functions, no servers; seconds)
	$(BIN)/pytest tests/unit

# The dashboard's tests drive Debian's Chromium (Playwright's own browser download cannot run offline): installed
# here when missing and this runs as root; otherwise the message says what to install.
chromium:  ## Debian's Chromium for the dashboard's tests (installed when missing, as root)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& echo "installing Debian's chromium for the dashboard tests" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
		|| { echo "the dashboard tests need Chromium: install it (Debian/Ubuntu: apt-get install chromium)"; exit 1; }

bench: $(STAMP)  ## the benchmarks of BENCHMARKS.md (about 8 minutes; needs Postgres, Redis and wrk, which it installs)
	$(BIN)/python -m bench

lint: $(STAMP)  ## ruff (lint, layering, complexity), ruff format, mypy --strict: what .pre-commit-config.yaml runs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## rewrite the code as ruff formats it, and apply ruff's fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## remove the virtual environment, the embedded data dir and the caches
	rm -rf $(VENV) grpo-data .pytest_cache .mypy_cache .ruff_cache
