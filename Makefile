# The two commands: `make run` (the default workflow) and `make test` (the suite).
# Both create .venv when missing and install the pinned lock first, so each is one command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run report ui test bench docs install clean docs-tables

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The default workflow (config.yaml) with the local profile; extra snakemake options in ARGS, e.g.
# `make run ARGS="--configfile configs/fashion-mnist.yaml"`. Jobs run `python -m lowloss` from .venv.
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local $(ARGS)

# Snakemake's HTML report of the same run: results/report.html, its tables as pages that sort and search,
# every figure, the captions. Give it the ARGS of the run, e.g.
# `make report ARGS="--configfile configs/fashion-mnist.yaml"`.
report: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local --report results/report.html $(ARGS)

# The MLflow UI on the workflow's default store; it first prints, per experiment, the address of its saved
# view of every method (key metrics and tags as the first columns, in MLflow 3's classic runs pages).
UI_PORT ?= 5000
UI_STORE := sqlite:///results/mlflow.db
ui: $(STAMP)
	@$(BIN)/python -c "from lowloss.tracking.store import ui_links; print('\n'.join(ui_links('$(UI_STORE)', 'http://127.0.0.1:$(UI_PORT)')))"
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(UI_PORT) --backend-store-uri $(UI_STORE)

# The tables of a finished run's report copied into docs/results/<name>/ (what the docs pages include), e.g.
# `make docs-tables REPORT=results/report/fashion-mnist`; scripts/docs_tables.py --check tells when they drift.
REPORT ?= results/report/default
docs-tables: $(STAMP)
	$(BIN)/python scripts/docs_tables.py $(REPORT)

test: $(STAMP)
	$(BIN)/python -m pytest --durations=20

# The documentation site (mkdocs.yml, docs/) in site/; --strict fails on any warning (a broken link or
# anchor, a docstring that does not render). NO_MKDOCS_2_WARNING silences mkdocs-material's end-of-life
# notice, which is not a warning of the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf results logs .snakemake

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH)
