# The two commands README.md names first: `make demo` and `make test`.
# Both create .venv and install pinpipe into it; the environments are reused as long as
# pyproject.toml (the dependency list) has not changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Airflow lives in its own venv: it pins an older FastAPI than the ingest API uses.
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

.PHONY: demo test setup check system-packages clean

# `make demo ARGS=--keep-running` keeps everything up for the dashboard after the summary.
demo: $(STAMP)
	$(BIN)/pinpipe demo $(ARGS)

test: $(STAMP) $(AIRFLOW_STAMP) system-packages
	PINPIPE_AIRFLOW_PYTHON=$(CURDIR)/$(AIRFLOW_VENV)/bin/python $(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

check:
	@PYTHON=$(PYTHON) sh scripts/check-prerequisites.sh

system-packages:
	@sh scripts/install-system-packages.sh

$(STAMP): pyproject.toml scripts/check-prerequisites.sh
	@PYTHON=$(PYTHON) sh scripts/check-prerequisites.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[spark,sql,test,bench]'
	@touch $(STAMP)

$(AIRFLOW_STAMP): pyproject.toml
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet -e '.[airflow,spark]'
	@touch $(AIRFLOW_STAMP)

# Stops what is running and removes what pinpipe placed outside the clone for PostgreSQL
# (as root, when the server user cannot enter the clone: see `pinpipe services status`).
clean:
	@if [ -x $(BIN)/pinpipe ]; then $(BIN)/pinpipe down && $(BIN)/pinpipe services clean; fi
	rm -rf $(VENV) $(AIRFLOW_VENV) data build *.egg-info src/*.egg-info
