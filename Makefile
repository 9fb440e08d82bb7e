# Every target sets up what it needs, so a fresh machine runs `make demo` or `make test` directly.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEVCLUSTER = PYTHONPATH=hack $(PYTHON) -m kubenas_devcluster

.PHONY: install demo test test-unit lint system-packages images cluster-binaries cluster-prereqs cluster-up cluster-down kueue-up bench-nb201

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,trainer]'

demo: install
	$(PYTHON) -m kubenas.cli run examples/digits-cell.yaml --out runs/demo

test: install cluster-binaries system-packages images
	$(PYTHON) -m pytest --durations=20

test-unit: install
	$(PYTHON) -m pytest -m "not e2e"

# The gates CI runs before the tests; each fails on any finding.
LINTED = operator trainer hack tests
lint: install
	$(PYTHON) -m ruff check $(LINTED)
	$(PYTHON) -m ruff format --check $(LINTED)
	$(PYTHON) -m mypy $(LINTED)

# Debian packages some tests run for real: lua5.1 is the Lua dialect Argo CD embeds; chromium
# opens the HTML report headless; buildah, podman, mmdebstrap and runc build and run the images.
system-packages:
	@command -v lua5.1 >/dev/null || { apt-get update -qq && apt-get install -y -qq lua5.1; }
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@for tool in buildah podman mmdebstrap runc; do command -v $$tool >/dev/null || missing=1; done; \
	  [ -z "$$missing" ] || { apt-get update -qq && apt-get install -y -qq buildah podman mmdebstrap runc; }

# The operator and trainer images, built with buildah from a Debian-made base (docs/operate.md);
# cached outside the checkout by their content, so an unrelated change builds nothing.
images: system-packages
	PYTHONPATH=hack $(PYTHON) -m kubenas_images

cluster-binaries cluster-prereqs:
	$(DEVCLUSTER) prereqs

cluster-up: cluster-binaries images
	$(DEVCLUSTER) up

# Real Kueue from its own chart, into the cluster `make cluster-up` started (docs/operate.md).
kueue-up: cluster-binaries images
	$(DEVCLUSTER) kueue

cluster-down:
	$(DEVCLUSTER) down

bench-nb201: install
	$(PYTHON) -m kubenas.cli bench nb201 --data ../shared/benchmarks/nb201 --queries 100 --seeds 100
