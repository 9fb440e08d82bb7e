# Every target sets up what it needs, so a fresh machine runs `make demo` or `make test` directly.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEVCLUSTER = PYTHONPATH=hack $(PYTHON) -m kubenas_devcluster

.PHONY: install demo test test-unit lint cluster-binaries cluster-prereqs cluster-up cluster-down bench-nb201

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,trainer]'

demo: install
	kubenas run examples/digits-cell.yaml --out runs/demo

test: install cluster-binaries
	$(PYTHON) -m pytest

test-unit: install
	$(PYTHON) -m pytest -m "not e2e"

lint: install
	ruff check operator trainer hack tests
	mypy operator/kubenas trainer/kubenas_trainer

cluster-binaries cluster-prereqs:
	$(DEVCLUSTER) prereqs

cluster-up: cluster-binaries
	$(DEVCLUSTER) up

cluster-down:
	$(DEVCLUSTER) down

bench-nb201: install
	kubenas bench nb201 --data ../shared/benchmarks/nb201 --queries 100 --seeds 100
