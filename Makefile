# facesvc: `make run` starts the service, `make test` runs the whole suite (real models).
# Everything is cached under ignored folders of the repo (.venv, .cache, models/.cache).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test test-fast screenshots fresh-root-check compose-test install models migrate lint typecheck check openapi clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

models: install
	$(BIN)/facesvc models pull

migrate: install
	$(BIN)/facesvc db upgrade

# .env gets a fresh data key and first admin key on the first run (printed once; never committed)
run: models migrate
	$(BIN)/facesvc keys init-env --file .env
	$(BIN)/facesvc serve --host $(HOST) --port $(PORT)

# Real components the tests start themselves (PostgreSQL); installed when we may.
system-deps:
	@bash scripts/system-deps.sh

# pytest's exit code 5 (no test collected) is a failure, not a success.
test: models system-deps
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# The inner loop: no e2e (no server processes, browser, nginx, podman), SQLite only. `make test`
# (what CI runs) is the whole suite.
test-fast: models
	@set +e; FACESVC_TEST_BACKENDS=sqlite $(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# README's screenshots, refreshed on purpose (the suite writes its own to .cache/screenshots)
screenshots: models system-deps
	FACESVC_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/e2e/test_browser.py $(PYTEST_ARGS)

# The image built and the compose stack run on podman, through nginx only (also part of `test`).
compose-test: install system-deps
	$(BIN)/python -m pytest tests/e2e/test_compose.py $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench alembic
	$(BIN)/ruff format --check src tests bench alembic

typecheck: install
	$(BIN)/mypy src

check: lint typecheck

openapi: install
	$(BIN)/facesvc openapi -o openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
