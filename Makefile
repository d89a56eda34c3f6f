# Two commands do all the set-up on a fresh machine:
#   make demo   - the control plane serving on embedded SQLite, with a simulated region
#   make test   - every test, on SQLite and PostgreSQL
# Everything else here is what those two (and .ci/run) are made of.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: setup demo test test-fast check lint gen gen-check bench bench-smoke postgres clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

setup: $(STAMP) $(NODE_STAMP)

postgres:
	bash scripts/ensure-postgres.sh

demo: setup
	$(PY) scripts/demo.py

test: setup postgres
	$(PY) -m pytest

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
	$(VENV)/bin/ruff check services clients tests bench scripts
	$(VENV)/bin/ruff format --check services clients tests bench scripts
	$(VENV)/bin/mypy services $$(test -d clients/ppos && echo clients)

check: lint gen-check

bench: setup postgres
	$(PY) -m bench --full

bench-smoke: setup postgres
	$(PY) -m bench --smoke

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
