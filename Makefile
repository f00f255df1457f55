# voicefleet: the README's commands. Everything is installed by these targets on a fresh
# machine (Go binaries, the Letta server, the Python environment) into
# $(VOICEFLEET_HOME) (default ~/.cache/voicefleet), cached by version.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VOICEFLEET_HOME ?= $(HOME)/.cache/voicefleet
export VOICEFLEET_HOME
VENV := $(CURDIR)/.venv

.PHONY: help deps system-deps bins letta python web up down status test test-unit test-integration lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

system-deps: ## Debian packages the stack and tests need (skipped when present)
	@bash tools/install-system.sh

bins: ## build and cache etcd, Kubernetes, kwok, LiveKit, kubectl, helm (Go module proxy)
	@bash tools/build-bins.sh

letta: ## install the Letta server 0.16.8 + PostgreSQL/pgvector in their own virtualenv
	@bash tools/install-letta.sh

python: ## .venv of this checkout, on dependencies cached by pyproject.toml hash
	@mkdir -p $(VOICEFLEET_HOME) && bash tools/install-python.sh >/dev/null

web: ## browser client bundle (npm, esbuild) and Debian chromium for the browser tests
	@bash tools/install-web-deps.sh

deps: system-deps python ## everything above; bins, Letta and the web client build side by side
	@bash tools/parallel.sh "bins:bash tools/build-bins.sh" "letta:bash tools/install-letta.sh" \
		"web:bash tools/install-web-deps.sh"
	@# The gateway's image holds the client bundle built above (root and mmdebstrap only).
	@if [ "$$(id -u)" = 0 ] && command -v mmdebstrap >/dev/null; then \
		bash tools/images/build-images.sh gateway; fi

up: deps ## run the local stack in the foreground (Ctrl-C stops it)
	@$(VENV)/bin/voicefleet up

down: ## stop the local stack
	@$(VENV)/bin/voicefleet down

status: ## show the local stack's processes
	@$(VENV)/bin/voicefleet status

lint: python ## ruff and mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

test: deps ## install what is missing, then lint, unit and integration tests on the real stack
	@$(MAKE) --no-print-directory lint
	@$(VENV)/bin/python -m pytest -ra -m "not slow" tests/unit tests/integration tests/e2e \
		--ignore=tests/integration/faults
	@# The fault suite restarts and freezes parts of its stack: a stack of its own.
	@$(VENV)/bin/python -m pytest -ra -m "not slow" tests/integration/faults

test-unit: python ## unit tests only (no stack)
	@$(VENV)/bin/python -m pytest -ra tests/unit

test-integration: deps ## integration and browser tests on the real local stack
	@$(VENV)/bin/python -m pytest -ra -m "not slow" tests/integration tests/e2e \
		--ignore=tests/integration/faults
	@$(VENV)/bin/python -m pytest -ra -m "not slow" tests/integration/faults

bench: deps ## benchmarks on a private local stack: tables, bench/results/latest.json, plot
	@$(VENV)/bin/python tests/bench/run.py

# -- Helm chart, plain manifests, images, kind (issue 7) ------------------------------------
.PHONY: manifests manifests-check chart-lint chart-test images node-images kind-e2e
HELM = $(if $(VOICEFLEET_BIN),$(VOICEFLEET_BIN),$(VOICEFLEET_HOME)/bin/current)/helm
IMAGE_TAG ?= 0.1.0

manifests: python ## render manifests/rbac.yaml and operator.yaml from the chart (and its CRD copy)
	@$(VENV)/bin/python charts/render_manifests.py

manifests-check: python ## fail if manifests/ differ from what the chart renders
	@$(VENV)/bin/python charts/render_manifests.py --check

chart-lint: ## helm lint --strict of charts/voicefleet, default and full test values
	@test -x $(HELM) || { echo "helm not found at $(HELM): run make bins or set VOICEFLEET_BIN"; exit 1; }
	@$(HELM) lint --strict charts/voicefleet
	@$(HELM) lint --strict charts/voicefleet -f tests/unit/chart/values-full.yaml --set serviceMonitor.enabled=false

chart-test: python ## chart tests: render, schema, golden, contracts; dry run, helm install + helm test on a private stack
	@$(VENV)/bin/python -m pytest -ra tests/unit/chart tests/integration/chart

node-images: ## build the pause, test box, worker, operator and gateway images without Docker (OCI archives)
	@bash tools/images/build-images.sh
	@bash tools/images/build-images.sh gateway

images: ## docker build the operator, gateway and worker images (needs a Docker engine)
	docker build -f operator/Dockerfile -t voicefleet-operator:$(IMAGE_TAG) .
	docker build -f web/Dockerfile -t voicefleet-gateway:$(IMAGE_TAG) .
	docker build -f worker/Dockerfile -t voicefleet-worker:$(IMAGE_TAG) .

kind-e2e: ## CI's end-to-end job: kind, images, LiveKit + Letta, helm install + test, suite (needs Docker, kind)
	@bash .github/kind/e2e.sh all
