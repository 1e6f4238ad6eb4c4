# Parley: the two commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
INFRA := bash deploy/local/infra.sh
PYTEST_ARGS ?=

.PHONY: help install infra-up observability-tools down status run run-forever run-observed test test-unit lint bench bench-ingest bench-router bench-sender bench-billing bench-flows soak

help:
	@echo "make run          install what is missing, start Kafka + PostgreSQL + all services + the simulator, drive demo traffic, print a summary (Ctrl-C stops)"
	@echo "make run-forever  the same, but keep everything running after the demo"
	@echo "make run-observed the demo with a Prometheus (from the OS packages) scraping every service and evaluating the alerts; keeps running"
	@echo "make test         install what is missing, start the infrastructure, run the whole test suite"
	@echo "make lint         ruff and mypy"
	@echo "make bench        every benchmark (bench-ingest, bench-router, bench-sender, bench-billing, bench-flows); results in bench-results/"
	@echo "make soak         the whole pipeline, two replicas each, 15 minutes of load and faults (SOAK_ARGS=...); bench-results/soak.json"
	@echo "make down         stop Kafka and PostgreSQL"

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"

.venv/.parley-synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --all-packages --frozen
	@touch $@

install: .venv/.parley-synced

infra-up: install
	$(INFRA) up

# Prometheus and promtool from the OS packages (apt): the demo's Prometheus and the rule checks of the tests.
observability-tools:
	bash deploy/local/prometheus.sh install

down:
	$(INFRA) down

status:
	$(INFRA) status

run: infra-up
	$(UV) run --frozen python deploy/local/run_demo.py

run-forever: infra-up
	$(UV) run --frozen python deploy/local/run_demo.py --keep-running

run-observed: infra-up observability-tools
	$(UV) run --frozen python deploy/local/run_demo.py --observed --keep-running

test: infra-up observability-tools
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-unit: install observability-tools
	$(UV) run --frozen pytest -m "not infra" $(PYTEST_ARGS)

lint: install
	$(UV) run --frozen ruff check libs services tests deploy
	$(UV) run --frozen mypy libs/common/parley_common libs/simulator/parley_simulator services/ingest/parley_ingest services/router/parley_router services/sender/parley_sender services/billing/parley_billing

bench: bench-ingest bench-router bench-sender bench-billing bench-flows

bench-ingest bench-router bench-sender bench-billing bench-flows: bench-%: infra-up
	@mkdir -p bench-results
	$(UV) run --frozen python tests/bench/bench_$*.py

SOAK_ARGS ?= --compare
soak: install
	@mkdir -p bench-results
	$(UV) run --frozen python tests/soak/soak.py $(SOAK_ARGS)
