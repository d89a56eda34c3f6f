# Two commands do all the set-up on a fresh machine:
#   make demo   - the whole control plane moving on embedded SQLite: three simulated
#                 regions, a fleet of node agents, governance acting (port 50051)
#   make test   - every test, on SQLite and PostgreSQL
# Everything else here is what those two (and .ci/run) are made of.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
# docker-compose v1 (PyPI) validates docker/compose.yaml without a Docker engine. It
# pins PyYAML<6 (built with cython<3) and jsonschema<4, so it lives in its own venv.
COMPOSE_VENV := .venv-compose
COMPOSE_STAMP := $(COMPOSE_VENV)/.installed-stamp
K8S_VERSION ?= 1.30.0
# The portal's browser tests drive Debian's chromium (Playwright's own browser
# download is not used); `make setup` installs it where apt-get can.
CHROMIUM := /usr/bin/chromium
PORTAL_LISTEN ?= 127.0.0.1:8080
PORTAL_PLANE ?= 127.0.0.1:50051
# Where `make demo` serves and keeps its state (the operator guide's test moves both).
DEMO_PORT ?= 50051
DEMO_PORTAL_PORT ?= 8080
DEMO_DIR ?= .demo
# `make test` runs test files on this many pytest-xdist workers.
TEST_WORKERS ?= 2

.PHONY: setup portal demo test test-fast check lint gen gen-check deploy-check bench bench-smoke postgres clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

$(COMPOSE_STAMP):
	$(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install --quiet 'cython<3' wheel setuptools
	$(COMPOSE_VENV)/bin/pip install --quiet --no-build-isolation 'PyYAML>=5.4,<6'
	$(COMPOSE_VENV)/bin/pip install --quiet docker-compose==1.29.2
	touch $@

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
	  echo "note: install Debian's chromium ($(CHROMIUM)) to run the portal's browser tests"; \
	fi

setup: $(STAMP) $(NODE_STAMP) $(COMPOSE_STAMP) $(CHROMIUM)

# The dashboard portal alone, for a plane already running (PORTAL_PLANE); operators
# sign in in the browser with their credential.
portal: setup
	$(VENV)/bin/ppos-portal --listen $(PORTAL_LISTEN) --plane $(PORTAL_PLANE)

postgres:
	bash scripts/ensure-postgres.sh

# Only what the demo and the operator guide use: not the compose validator's venv.
demo: $(STAMP) $(NODE_STAMP)
	$(PY) scripts/demo.py --port $(DEMO_PORT) --portal-port $(DEMO_PORTAL_PORT) --dir $(DEMO_DIR)

test: setup postgres
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(PY) -m pytest -m 'not slow and not interop'

gen: setup
	$(PY) scripts/gen_protos.py

gen-check: setup
	bash scripts/check-generated.sh

lint: setup
	node_modules/.bin/buf lint
	@if git rev-parse --verify -q main >/dev/null; then \
	  node_modules/.bin/buf breaking --against '.git#branch=main'; fi
	$(VENV)/bin/ruff check src clients tests bench scripts
	$(VENV)/bin/ruff format --check src clients tests bench scripts
	$(VENV)/bin/mypy src $$(test -d clients/ppos && echo clients)
	$(VENV)/bin/lint-imports

deploy-check: setup
	cd docker && ../$(COMPOSE_VENV)/bin/docker-compose -f compose.yaml config --quiet
	$(VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_VERSION) deploy/k8s/*.yaml

check: lint gen-check deploy-check

bench: setup postgres
	$(PY) -m bench --full

bench-smoke: setup postgres
	$(PY) -m bench --smoke

clean:
	rm -rf $(VENV) $(COMPOSE_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
