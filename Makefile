# Every target sets itself up: a local .venv with the project installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test proto lint build bench run-control run-node1 run-node2 run-node3 run-client clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/mboard up --data-dir ./data

test: $(STAMP)
	$(BIN)/ruff check mboard tests
	$(BIN)/python -m pytest

proto: $(STAMP)
	$(BIN)/python -m mboard.api.generate

lint: $(STAMP)
	$(BIN)/ruff check mboard tests

bench: $(STAMP)
	$(BIN)/mboard bench --baseline

run-control: $(STAMP)
	$(BIN)/mboard control --config configs/control.yaml

run-node1: $(STAMP)
	$(BIN)/mboard node --config configs/node1.yaml

run-node2: $(STAMP)
	$(BIN)/mboard node --config configs/node2.yaml

run-node3: $(STAMP)
	$(BIN)/mboard node --config configs/node3.yaml

run-client: $(STAMP)
	$(BIN)/mboard client shell

clean:
	rm -rf $(VENV) build dist data *.egg-info
