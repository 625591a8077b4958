# The two commands of the README: `make run` (local API) and `make test` (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run sandbox test lint pytest openapi bench screenshots install system-deps clean

run: install
	$(BIN)/python -m mailbridge_tools.localapi

# The local run plus a demo mailbox (Dovecot, SMTP) on loopback: no internet needed.
sandbox: install system-deps
	$(BIN)/python -m mailbridge_tools.localapi --sandbox

test: install system-deps lint pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml

pytest: install
	$(BIN)/pytest

# openapi.json, generated from the functions' routes and models (tests fail while it is stale).
openapi: install
	$(BIN)/python -m mailbridge_tools.openapi

# The Email tab's screenshots the README embeds, fresh from the browser tests.
screenshots: install system-deps
	$(BIN)/pytest tests/test_email_tab.py
	cp artifacts/screenshots/*.png docs/screenshots/

# Cold starts, the layer's size and connection-test latency in one table (BENCHMARKS.md);
# exits 1 when a budget fails. The layer's dependencies are cached under build/.
bench: install system-deps
	$(BIN)/python -m mailbridge_bench

install: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Real servers the tests start (Dovecot); installed with apt when missing.
system-deps:
	scripts/install-system-deps

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache *.egg-info
