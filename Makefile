# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test schema clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The main job on the bundled demo experiment (grows into the whole pipeline as stages land).
demo: setup
	$(BIN)/pipeline demo-data data/demo
	$(BIN)/pipeline validate configs/experiments/demo.yaml
	$(BIN)/snakemake --profile profiles/local --config experiment=configs/experiments/demo.yaml

test: setup
	$(BIN)/python -m pytest

# Regenerate the committed JSON Schema (a test checks it is current).
schema: setup
	$(BIN)/pipeline schema -o schema/experiment.schema.json

clean:
	rm -rf $(VENV) data results .snakemake
