# onair — install what is missing, start the real services, run the tests.
# Everything installs into .venv/ and .cache/; services keep their state and logs in .run/.
# All three are ignored by git. Every target is safe to run again.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.onair-deps-installed

# Debian packages the tests need (infra/system also checks Java 17+ and Maven).
# Chromium: the e2e player test drives /usr/bin/chromium with playwright-core.
CHROMIUM_PACKAGES ?= chromium
SYSTEM_PACKAGES := ffmpeg $(if $(wildcard package.json),npm) $(CHROMIUM_PACKAGES)
# Player assets (hls.js) and playwright-core, from package-lock.json.
NODE_STAMP := $(if $(wildcard package-lock.json),node_modules/.onair-npm-installed)

STARTED_BY_TEST := .run/started-by-test
PYTEST_ARGS ?= -q tests
TEST_ENV := \
	PYTHONFAULTHANDLER=1 \
	ONAIR_KAFKA_BOOTSTRAP=localhost:9092 \
	ONAIR_S3_ENDPOINT=http://127.0.0.1:9000 \
	ONAIR_S3_ACCESS_KEY=onair \
	ONAIR_S3_SECRET_KEY=onair-secret-key \
	ONAIR_S3_BUCKET=onair

# Coverage-guided fuzzing (tests/fuzz/): atheris into .venv, each target FUZZ_SECONDS long.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_STAMP := $(VENV)/.onair-fuzz-installed
ATHERIS := atheris>=2.3

.PHONY: help venv node system bench-tools services stop up lint test fuzz faults

help:
	@echo "make up        install what is missing, start Kafka + S3 and the platform"
	@echo "make services  start only Kafka (localhost:9092) and S3 (127.0.0.1:9000)"
	@echo "make stop      stop the services the repo started"
	@echo "make test      install, start services, lint, run the whole suite, stop what it started"
	@echo "make lint      ruff check, ruff format --check, mypy"
	@echo "make fuzz      coverage-guided fuzzing (atheris), FUZZ_SECONDS per target (default 60),"
	@echo "               crash inputs in .cache/fuzz/crashes/; not part of make test"
	@echo "make faults    SIGKILL every role in turn under a live stream (bench/faults.py): the"
	@echo "               table of what was lost and the recovery times (FAULTS_ARGS=--cluster:"
	@echo "               on three brokers, one killed too); make test runs the same check"
	@echo "make bench-tools  wrk, nginx and h2load (Debian's) for python -m bench.origin"
	@echo "make venv      .venv with the project and its dev tools"
	@echo "make system    Debian packages the tests need (ffmpeg, Java 17+, Maven, chromium)"
	@echo "make node      node_modules from package-lock.json (hls.js, playwright-core)"
	@echo "infra/kafka, infra/s3, infra/services: finer control (cluster mode, restart, status)"

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

node: $(NODE_STAMP)

node_modules/.onair-npm-installed: package.json package-lock.json | system
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

system:
	@infra/system $(SYSTEM_PACKAGES)

bench-tools:
	@infra/system wrk nginx-light nghttp2-client

services: system
	@infra/services up

stop:
	@infra/services down

up: venv system node services
	@if [ -f onair/cli.py ]; then \
		$(VENV)/bin/onair up; \
	else \
		echo "Kafka (localhost:9092) and S3 (http://127.0.0.1:9000, bucket onair) are running;"; \
		echo "logs in .run/logs/. The platform itself (onair up) is not built yet."; \
	fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict infra/localsvc tests/conftest.py

# Services start in the background while lint runs; whatever this run started (listed in
# $(STARTED_BY_TEST)) is stopped afterwards, pass or fail, and make exits with the status.
test: venv system node
	@infra/services up --no-wait --record $(STARTED_BY_TEST)
	@status=0; \
	trap 'infra/services down --recorded $(STARTED_BY_TEST); exit 130' INT TERM; \
	{ $(MAKE) --no-print-directory lint \
		&& infra/services wait \
		&& env $(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_ARGS); } || status=$$?; \
	infra/services down --recorded $(STARTED_BY_TEST); \
	exit $$status

# The fault matrix (bench/faults.py) with its table; make test checks the same outcome
# (tests/e2e/test_fault_matrix.py) without printing it.
faults: venv system
	@infra/services up
	env $(TEST_ENV) $(VENV)/bin/python -m bench.faults $(FAULTS_ARGS)

# Not part of `test`: each target runs FUZZ_SECONDS (FUZZ_TARGETS: a subset), one after
# another; exits non-zero on a crash (tests/fuzz/run.py). atheris ships wheels for CPython on
# Linux x86_64; from source it needs clang with libFuzzer, so only a wheel is taken here.
fuzz: $(FUZZ_STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

$(FUZZ_STAMP): $(VENV_STAMP)
	@$(VENV)/bin/pip install -q --disable-pip-version-check --only-binary=atheris '$(ATHERIS)' \
		|| { echo "make fuzz: no atheris wheel for $$($(VENV)/bin/python -V) on $$(uname -m);"; \
		     echo "  build it with clang and libFuzzer: CLANG_BIN=clang $(VENV)/bin/pip install atheris"; \
		     exit 1; }
	@touch $@
