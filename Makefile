# `make train` and `make test` work on a fresh machine: both go through `make install`, which
# creates .venv and installs the package with its dev extras, and re-installs only when
# pyproject.toml changed (the stamp file records the last successful install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-slow lint format clean reproduce-fashion-mnist

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: install
	$(BIN)/dim-train experiment=quickstart $(ARGS)

test: install
	$(BIN)/python -m pytest -n auto --dist worksteal $(ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(ARGS)

# Fashion-MNIST table (docs/fashion_mnist.md): both presets, the baselines, probes and plots, written
# to docs/fashion_mnist/; about an hour of 2 CPU cores. The four idx .gz files go in
# $(DATA)/FashionMNIST/raw.
DATA ?= data
reproduce-fashion-mnist: install
	$(BIN)/python scripts/reproduce_fashion_mnist.py --data-dir $(DATA) $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf outputs multirun .pytest_cache
