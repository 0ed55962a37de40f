# The two commands that matter: `make serve` and `make test`. Everything else is for development.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test install install-test alertmanager prometheus browser deploy-check lint typecheck unit clean bench

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

# Debian's headless Chromium and its driver, for the web console's browser tests (no download
# of a browser at test time: Selenium is pointed at these).
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

# Debian's Prometheus: `prometheus` for the integration tests (started on loopback by the tests
# themselves), `promtool` for deploy-check. Where a policy-rc.d forbids it (containers) the
# package does not start its service on install.
prometheus:
	@{ command -v prometheus && command -v promtool; } >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

# deploy/'s linters and validators from PyPI (deploy/requirements-check.txt), into the venv.
$(VENV)/.deploy-check-tools: deploy/requirements-check.txt $(BIN)/escalation-engine
	$(BIN)/pip install -q -r deploy/requirements-check.txt
	touch $@

K8S_VERSION ?= 1.35.0

# Lint and validate everything in deploy/ (and the Dockerfile). No Docker or cluster needed.
# The compose file is checked against the Compose Specification JSON schema that
# check-jsonschema vendors (--builtin-schema vendor.compose-spec): a pinned PyPI package, no
# network at check time, and the schema Docker Compose itself validates against (no Docker
# engine here to run `docker compose config`).
deploy-check: install prometheus alertmanager $(VENV)/.deploy-check-tools
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/escalation-engine.rules.yml
	promtool test rules deploy/prometheus/rules/escalation-engine.tests.yml
	amtool check-config deploy/alertmanager/alertmanager.yml
	$(BIN)/hadolint --no-color Dockerfile
	$(BIN)/kubernetes-validate --strict --kubernetes-version $(K8S_VERSION) \
		deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml \
		deploy/kubernetes/poddisruptionbudget.yaml deploy/kubernetes/redis.yaml
	@for f in policies/*.yaml; do \
		grep -qE "^ *- \.\./\.\./$$f *$$" deploy/kubernetes/kustomization.yaml || { \
			echo "deploy/kubernetes/kustomization.yaml: configMapGenerator does not list $$f" >&2; exit 1; }; \
	done
	out=$$(mktemp) && trap 'rm -f "$$out"' EXIT && \
		$(BIN)/kubectl kustomize --load-restrictor LoadRestrictionsNone deploy/kubernetes >"$$out" && \
		$(BIN)/kubernetes-validate --strict --kubernetes-version $(K8S_VERSION) "$$out"
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml
	python3 deploy/check_dashboard.py

# ruff, and import-linter: the import rule of the README's "Development" section (pyproject.toml)
lint: install
	$(BIN)/ruff check engine tests
	$(BIN)/ruff format --check engine tests
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Everything: deploy/ checks, lint, types, policy check, unit + real Redis/Cluster + real Alertmanager tests.
test: install alertmanager prometheus browser deploy-check lint typecheck
	$(BIN)/escalation-engine check policies
	$(BIN)/escalation-engine test policies/tests --policies policies
	$(BIN)/python -m pytest -q

# Every benchmark against a real redis-server on loopback (bench/README.md): ≤ 15 minutes, or
# ≤ 3 with BENCH_ARGS=--quick; writes bench/RESULTS.md and bench/results.json. Needs wrk for ingest.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

unit: install
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
