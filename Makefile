# django-bedrock-stream: `make demo` runs the example site on the built-in Bedrock emulator,
# `make test` runs the test suite. Both create .venv and install the package on first use.

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
EMULATOR_PORT ?= 8787
# Pace the emulator's generated replies so the demo visibly streams.
EMULATOR_ARGS ?= --tokens 60 --delay-ms 40
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-asgi test test-postgres test-matrix test-oldest test-newest test-newest-postgres venv-matrix js lint bench venv

# (Re)install when the package metadata changes; otherwise a no-op.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $@

venv: $(STAMP)

# The AI SDK client tests (tests/js) need node + npm; without them those tests are skipped.
JS_STAMP := $(if $(wildcard tests/js/package-lock.json),tests/js/node_modules/.installed)

js: $(JS_STAMP)

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/js --silent --no-audit --no-fund && touch $@; \
	else echo "npm not found: the JS client tests (tests/test_clients.py) will be skipped"; fi

# One shell for the whole recipe: the EXIT trap stops the emulator when the server exits. In a terminal,
# job control (set -m) hands the terminal to the server, so Ctrl-C reaches the server alone (not make,
# which would die of it and report "Error 130"); a server stopped by Ctrl-C (130) is a clean stop, exit 0.
define run_with_emulator
	@$(PY) manage.py migrate --noinput -v 0
	@set -e; if [ -t 0 ]; then set -m; fi; \
	$(PY) manage.py bedrock_emulator --port $(EMULATOR_PORT) $(EMULATOR_ARGS) & emulator=$$!; \
	trap 'kill $$emulator 2>/dev/null || true; wait $$emulator 2>/dev/null || true' EXIT; trap 'exit 0' INT TERM; \
	for i in $$(seq 50); do \
		kill -0 $$emulator 2>/dev/null || { echo "make $@: the emulator did not start; choose its port with make $@ EMULATOR_PORT=N" >&2; exit 2; }; \
		$(PY) -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(EMULATOR_PORT)/_emulator/health', timeout=1)" 2>/dev/null && break; sleep 0.2; \
	done; \
	echo ""; echo "  Demo: http://$(HOST):$(PORT)/   (Bedrock emulator on port $(EMULATOR_PORT); Ctrl-C stops both)"; echo ""; \
	BEDROCK_EMULATOR_URL=$${BEDROCK_EMULATOR_URL:-http://127.0.0.1:$(EMULATOR_PORT)} $(1) || [ $$? -eq 130 ]
endef

demo: $(STAMP)
	$(call run_with_emulator,$(PY) manage.py runserver $(HOST):$(PORT))

demo-asgi: $(STAMP)
	$(call run_with_emulator,$(BIN)/uvicorn example_project.asgi:application --host $(HOST) --port $(PORT))

# pytest exits 5 when it collects no tests; that must fail the target, like any non-zero code.
test: $(STAMP) $(JS_STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

test-postgres: $(STAMP) $(JS_STAMP)
	@BEDROCK_TEST_DB=postgres $(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test-postgres: pytest collected no tests" >&2; fi; \
	exit $$status

# The supported-versions matrix' ends: the oldest pair (Python 3.10 + Django 4.2 LTS) and the newest
# (Python 3.13 + Django 6.x), each in its own venv. Interpreters come from pyenv or PATH.
PYTHON_OLDEST ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python) $(shell command -v python3.10))
PYTHON_NEWEST ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13.*/bin/python) $(shell command -v python3.13))

# A leg's venv is (re)built when the package metadata changes (CI builds both while the main suite runs).
define matrix_venv
	@test -n "$(1)" || { echo "no interpreter for $(2) (set PYTHON_OLDEST / PYTHON_NEWEST)" >&2; exit 1; }
	@test -x $(2)/bin/python || $(1) -m venv $(2)
	@$(2)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" "$(3)"
	@touch $(2)/.installed
endef

define run_matrix_leg
	@$(2)/bin/python -c "import os, sys, django; print('matrix leg: Python', sys.version.split()[0], '+ Django', django.__version__, 'on', os.environ.get('BEDROCK_TEST_DB', 'sqlite'))"
	@$(2)/bin/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "$(2): pytest collected no tests" >&2; fi; exit $$status
endef

OLDEST_DJANGO := django>=4.2,<5
NEWEST_DJANGO := django>=6,<7

.venv-oldest/.installed: setup.cfg pyproject.toml
	$(call matrix_venv,$(PYTHON_OLDEST),.venv-oldest,$(OLDEST_DJANGO))

.venv-newest/.installed: setup.cfg pyproject.toml
	$(call matrix_venv,$(PYTHON_NEWEST),.venv-newest,$(NEWEST_DJANGO))

venv-matrix: .venv-oldest/.installed .venv-newest/.installed

test-matrix: test-oldest test-newest

test-oldest: .venv-oldest/.installed $(JS_STAMP)
	$(call run_matrix_leg,$(PYTHON_OLDEST),.venv-oldest)

test-newest: .venv-newest/.installed $(JS_STAMP)
	$(call run_matrix_leg,$(PYTHON_NEWEST),.venv-newest)

# The newest pair on PostgreSQL (as test-postgres, in the newest leg's venv): CI runs the database tests
# there, and the newest leg's other tests on SQLite, rather than each test twice on one pair.
test-newest-postgres: export BEDROCK_TEST_DB = postgres
test-newest-postgres: .venv-newest/.installed $(JS_STAMP)
	$(call run_matrix_leg,$(PYTHON_NEWEST),.venv-newest)

# Both tools run even when the first fails; a tool that is not installed is skipped with a note.
lint: $(STAMP)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@status=0; \
	if $(PY) -m ruff --version >/dev/null 2>&1; then $(PY) -m ruff check django_bedrock_stream tests example_project || status=1; \
	else echo "ruff not installed (pip install -e '.[dev]'); skipped"; fi; \
	if $(PY) -m mypy --version >/dev/null 2>&1; then $(PY) -m mypy django_bedrock_stream example_project || status=1; \
	else echo "mypy not installed (pip install -e '.[dev]'); skipped"; fi; \
	exit $$status

bench: $(STAMP)
	@$(PY) benchmarks/run.py
