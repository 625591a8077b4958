# The README's workflows: `make run` (local API), `make sandbox`, `make invoke`, `make build`
# and `make test` (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The local run's port: make run PORT=9000.
PORT ?= 8787

.PHONY: run sandbox invoke build test lint pytest openapi bench screenshots install system-deps clean

run: install
	$(BIN)/python -m mailbridge_tools.localapi --port $(PORT)

# The local run plus a demo mailbox (Dovecot, SMTP) on loopback: no internet needed.
sandbox: install system-deps
	$(BIN)/python -m mailbridge_tools.localapi --sandbox --port $(PORT)

# One sample event through its function, in process, against a store with the demo agents:
# make invoke EVENT=events/get_email_config.json
invoke: install
	@test -n "$(EVENT)" || { echo "usage: make invoke EVENT=events/<file>.json" >&2; exit 2; }
	$(BIN)/python -m mailbridge_tools.localapi --invoke $(EVENT)

# sam build, once the functions' runtime's Python and SAM CLI are on PATH (it says how to get
# them); SAM_ARGS go to sam build, e.g. SAM_ARGS=--use-container.
build: install
	$(BIN)/python -m mailbridge_tools.build $(SAM_ARGS)

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
