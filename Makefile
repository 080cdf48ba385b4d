# Two commands do all the set-up on a bare Debian machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard's vendored JS/CSS (deploy/local/web-assets.sh writes this copy of the lock last)
ASSETS := api/static/vendor/.lock
BACKEND := $(or $(GUARDIAN_TEST_BACKEND),local)

.PHONY: setup system stack down status test demo bench lint docs clean

## system: Debian packages (Redis, PostgreSQL, Java, Maven, docker-compose, prometheus for promtool,
## npm for the web assets, chromium + chromium-driver for the browser tests), only those missing
system:
	@bash deploy/local/install-system.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# npm pack of the versions pinned in api/static/vendor.lock, verified, into api/static/vendor/ (git-ignored)
$(ASSETS): api/static/vendor.lock deploy/local/web-assets.sh | system
	@bash deploy/local/web-assets.sh

## setup: system packages + .venv with the project installed + the dashboard's web assets
setup: system $(STAMP) $(ASSETS)

## stack: start the real local services (idempotent)
stack: setup
	$(BIN)/guardian stack up

down:
	$(BIN)/guardian stack down

status:
	$(BIN)/guardian stack status

## test: everything set up, then pytest against real services; exits with pytest's status
test: setup
ifeq ($(BACKEND),local)
	$(BIN)/guardian stack up
endif
	@echo "make test: integration tests use the '$(BACKEND)' backend (GUARDIAN_TEST_BACKEND=local|testcontainers)"
	$(BIN)/pytest

## demo: the platform with a simulated trading host; DEMO_SECONDS=N stops after N seconds.
## `guardian demo` starts the stack itself, so it can stop exactly what it started.
demo: setup
	$(BIN)/guardian demo $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS),)

## bench: producer, pipeline, recovery and consistency benchmarks; tables printed, JSON in bench/results/
bench: stack
	$(BIN)/guardian bench all

lint: setup
	$(BIN)/ruff check .

## docs: build docs/ into build/site (strict: a broken link or anchor fails)
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build

## clean: stop the stack and delete its data (Kafka jars stay cached under .stack/cache)
clean:
	-$(BIN)/guardian stack down
	rm -rf .stack/kafka .stack/redis .stack/postgres .stack/run .stack/logs .stack/spool .stack/worker
