# Signoff: `make run` to try it, `make test` to check it. `make help` lists every target.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/signoff
# Database 15 is the tests' own: the worker tests empty its queue.
REDIS_URL ?= redis://127.0.0.1:6379/15

.NOTPARALLEL:
.PHONY: help venv node setup browser services lint test test-suites test-sqlite test-postgres test-langgraph run clean

help: ## list the targets
	@echo "Signoff: make run (try it) and make test (check it)."
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

venv: ## create .venv (Python >= 3.12) and install requirements-dev.txt when they change
	@bin/setup-venv

node: ## install the JS client the tests drive (tests/js, npm ci) when its lockfile changes
	@bin/setup-node

setup: venv node

browser: ## make sure Debian's Chromium is installed for the browser tests (apt-get as root)
	@bin/setup-browser

services: ## start PostgreSQL and Redis on 127.0.0.1 if they are not running
	@bin/services

lint: setup ## ruff check, ruff format --check, mypy
	@echo "==> ruff check"
	$(BIN)/ruff check .
	@echo "==> ruff format --check"
	$(BIN)/ruff format --check .
	@echo "==> mypy"
	@# The django-stubs plugin imports config.settings, which needs a secret key and an audit key with DEBUG off.
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-mypy-only-not-a-secret} \
	SIGNOFF_AUDIT_KEY=$${SIGNOFF_AUDIT_KEY:-bXlweS1vbmx5LW5vdC1hLXNlY3JldC1hdWRpdC1rZXkh} $(BIN)/mypy

test: setup browser services lint test-suites test-langgraph ## lint, the test suite on SQLite and on PostgreSQL (side by side), LangGraph's checkpointer tests

test-suites: setup browser services ## the test suite on SQLite and on PostgreSQL at once (bin/test-suite both)
	@POSTGRES_URL=$(POSTGRES_URL) REDIS_URL=$(REDIS_URL) bin/test-suite both

test-sqlite: setup browser ## the test suite on SQLite and the on-disk broker (the embedded default)
	@bin/test-suite sqlite

test-postgres: setup browser services ## the test suite on PostgreSQL (POSTGRES_URL) and Redis (REDIS_URL)
	@POSTGRES_URL=$(POSTGRES_URL) REDIS_URL=$(REDIS_URL) bin/test-suite postgres

# The sdist is fetched once into var/langgraph-sdist/ (make clean removes it).
test-langgraph: setup services ## LangGraph's own checkpointer tests on DjangoSaver (SQLite, PostgreSQL) and LangGraph's savers
	POSTGRES_URL=$(POSTGRES_URL) bin/test-langgraph

run: setup ## migrate, demo users and threads, then web + worker + beat on http://127.0.0.1:8000/ (HOST, PORT)
	@bin/run

clean: ## remove var/ (the databases) and caches; keeps .venv
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
