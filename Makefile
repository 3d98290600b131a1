# omopflow: `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(abspath $(PY))
export GX_ANALYTICS_ENABLED ?= false
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: help setup browser demo test lint types unit drill clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## create .venv/ from the pinned dependencies

demo: setup ## run the whole batch on the shipped sample (output in ./out/demo)
	$(VENV)/bin/omopflow demo

lint: setup ## ruff lint and format check; generated suites up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m expectations.generate --check

types: setup ## mypy
	$(VENV)/bin/mypy

browser: ## headless Chromium for the report's browser tests (apt-get, when run as root)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make: chromium is not installed; the browser tests will be skipped"

unit: setup browser ## the test suite (two workers: see tests/conftest.py), without the drill
	$(VENV)/bin/pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not drill" --durations=10

drill: setup ## the crash drill: a run killed at every stage, then rerun (docs/governance.md)
	$(VENV)/bin/pytest -m drill tests/reliability/test_faults.py

test: lint types unit ## lint, types and tests: what CI runs

clean: ## remove build outputs (keeps .venv)
	rm -rf out build .pytest_cache .mypy_cache
