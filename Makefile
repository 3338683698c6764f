# The two commands: `make run` (the default workflow) and `make test` (the suite).
# Both create .venv when missing and install the pinned lock first, so each is one command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench install clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/lowloss train --dataset digits --arch onehidden --width 256 --epochs 20 --seed 0 --out results/digits/onehidden/models/seed0.safetensors
	$(BIN)/lowloss train --dataset digits --arch onehidden --width 256 --epochs 20 --seed 1 --out results/digits/onehidden/models/seed1.safetensors

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf results logs .snakemake

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH)
