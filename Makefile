# Set-up is part of every target: a fresh machine needs only python3 (and apt for the browser tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: demo test test-slow test-all install browser postgres

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Debian's chromium for the Playwright browser tests (no browser download: the package registry only).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Debian's PostgreSQL server: the job store and registry tests also run against a real one (tests/pg_server.py).
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

demo: $(VENV)/.installed
	$(VENV)/bin/coinage demo

test: $(VENV)/.installed browser postgres
	$(PY) -m pytest -q

# The slow reliability tests CI runs after `make test` (.ci/run; docs/reliability.md says what runs where): the
# 10,000-case fuzz runs, the web process killed mid-reindex, the 5,000-row ingest killed at random points,
# bench/load.py, and the Ray Data bulk path (tests/test_indexer_ray.py: a killed worker, an adopted build).
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow tests/reliability tests/test_indexer_ray.py

test-all: $(VENV)/.installed browser postgres
	$(PY) -m pytest -q -m "not realweights"
