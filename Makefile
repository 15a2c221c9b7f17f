# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean deploy-tools browser-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m patron.demo

# Three pytest-xdist workers: most tests wait on brokers, subprocesses and fsyncs, so three share two
# CPUs well (the suite took 14 minutes serially, 3.5 in parallel).
test: $(STAMP) deploy-tools browser-tools
	$(BIN)/python -m pytest -n 3

# tests/test_deploy.py validates deploy/docker-compose.yml with docker-compose, which needs no Docker engine.
deploy-tools:
	command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-compose)

# tests/test_report.py renders `patron report` in headless Chromium (Debian's chromium package).
browser-tools:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/projections.py
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/segments.py --profiles 100000
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) patron-data
