# The two commands README.md names first: `make demo` and `make test`.
# Both create .venv and install pinpipe into it; the environment is reused as long as
# pyproject.toml (the dependency list) has not changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup check clean

demo: $(STAMP)
	$(BIN)/pinpipe demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

check:
	@PYTHON=$(PYTHON) sh scripts/check-prerequisites.sh

$(STAMP): pyproject.toml scripts/check-prerequisites.sh
	@PYTHON=$(PYTHON) sh scripts/check-prerequisites.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) data build *.egg-info src/*.egg-info
