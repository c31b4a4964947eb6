# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-lm test lint format schema clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,text]'
	touch $@

# The main job: the whole pipeline on the bundled demo experiment, from generated audio to sampled WAVs.
DEMO_EXPERIMENT ?= configs/experiments/demo.yaml
demo: setup
	$(BIN)/pipeline demo-data data/demo
	$(BIN)/pipeline validate $(DEMO_EXPERIMENT)
	$(BIN)/snakemake --profile profiles/local --config experiment=$(DEMO_EXPERIMENT)

# The same workflow on the discrete demo: an rvq autoencoder and a language model over its codes.
demo-lm:
	$(MAKE) demo DEMO_EXPERIMENT=configs/experiments/demo_lm.yaml

# Lint first (seconds), then the suite: what CI runs (.ci/run).
test: lint
	$(BIN)/python -m pytest

LINTED := pipeline tests bench
SNAKEFILES := Snakefile workflow/rules

lint: setup
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/snakefmt --check $(SNAKEFILES)

# Apply the formatters and the safe lint fixes.
format: setup
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/snakefmt $(SNAKEFILES)

# Regenerate the committed JSON Schema and the experiment reference made from it (tests check both are current).
schema: setup
	$(BIN)/pipeline schema -o schema/experiment.schema.json
	$(BIN)/pipeline schema --markdown -o docs/experiment-reference.md

clean:
	rm -rf $(VENV) data results .snakemake
