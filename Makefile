# Two commands for a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ppkt-installed

.PHONY: install demo test bench bench-transfer bench-ablations bench-detection clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ppkt pretrain --config configs/pretrain_demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/report.py
	$(PY) benchmarks/bench_sens.py
	$(PY) benchmarks/bench_predict.py

clean:
	rm -rf runs/demo .pytest_cache

# the benchmarks (docs/benchmarks.md): `ppkt benchmark transfer|detection|ablations|pilot`
bench-transfer: $(STAMP)
	$(VENV)/bin/ppkt benchmark transfer run

bench-ablations: $(STAMP)
	$(VENV)/bin/ppkt benchmark ablations run

bench-detection: $(STAMP)
	$(VENV)/bin/ppkt benchmark detection run
