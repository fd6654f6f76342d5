# Two commands on a fresh machine:
#   make repro   the whole DVC DAG on the embedded `shapes` default (creates .venv first)
#   make test    the test suite (all but the rehearsal)
# and the rehearsal of the real study: the COCO profile on a miniature local mirror
#   make rehearsal
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.capt-installed

.PHONY: repro test rehearsal venv bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

repro: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro

test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" python -m pytest -q -m "not rehearsal"

rehearsal: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" CAPT_REHEARSAL_REPORT=rehearsal.json python -m pytest -q -m rehearsal tests/test_rehearsal.py
	$(PY) benchmarks/project_coco.py rehearsal.json

bench: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" python benchmarks/bench_prepare.py
