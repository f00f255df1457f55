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
	@$(VENV)/bin/python -m pytest -ra tests/unit tests/integration tests/e2e

test-unit: python ## unit tests only (no stack)
	@$(VENV)/bin/python -m pytest -ra tests/unit

test-integration: deps ## integration and browser tests on the real local stack
	@$(VENV)/bin/python -m pytest -ra tests/integration tests/e2e

bench: deps ## benchmarks on the local stack: table + bench/results/latest.json
	@$(VENV)/bin/python tests/bench/bench_reconcile.py
