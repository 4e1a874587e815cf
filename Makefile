# Every target sets itself up: a local .venv with the project installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test proto lint build build-onedir bench run-control run-node1 run-node2 run-node3 run-client clean

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

# The frozen executables (build.spec): dist/mboard, one self-contained file; and
# dist/mboard-onedir.tar.gz, a folder that starts faster (see README, "One binary").
build: $(STAMP)
	$(BIN)/pyinstaller --noconfirm --log-level WARN --workpath build/onefile build.spec
	@ls -l dist/mboard

build-onedir: $(STAMP)
	$(BIN)/pyinstaller --noconfirm --log-level WARN --workpath build/onedir build.spec -- --onedir
	tar -C dist -czf dist/mboard-onedir.tar.gz mboard-onedir
	@ls -l dist/mboard-onedir.tar.gz

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
