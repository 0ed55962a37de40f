# The two commands that matter: `make serve` and `make test`. Everything else is for development.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test install install-test alertmanager lint typecheck unit clean

$(BIN)/escalation-engine: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/escalation-engine

# Start the engine on the example policies, embedded Redis in ./data, listening on :9095.
serve: install
	$(BIN)/escalation-engine serve --policies policies --data-dir data

# Debian's Alertmanager, for the end-to-end tests.
alertmanager:
	@command -v prometheus-alertmanager >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus-alertmanager; }

# ruff, and import-linter: the import rule of the README's "Development" section (pyproject.toml)
lint: install
	$(BIN)/ruff check engine tests
	$(BIN)/ruff format --check engine tests
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Everything: lint, types, policy check, unit + real Redis/Cluster + real Alertmanager tests.
test: install alertmanager lint typecheck
	$(BIN)/escalation-engine check policies
	$(BIN)/python -m pytest -q

unit: install
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
