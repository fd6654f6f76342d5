# Two commands on a fresh machine:
#   make repro   the whole DVC DAG on the embedded `shapes` default (creates .venv first)
#   make test    the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.capt-installed

.PHONY: repro test venv bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

repro: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro

test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" python -m pytest -q

bench: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" python benchmarks/bench_prepare.py
