# durasync — developer entry points. `make run` and `make test` work on a fresh
# machine with Python >= 3.11, git, node/npm and make: everything else is
# installed here, into .venv and tests/*/node_modules.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 4437
DATA   ?= ./durasync-data
PYTEST_ARGS ?=

NPM_DIRS := tests/js js
CHROMIUM ?= /usr/bin/chromium

.PHONY: run run-cluster test lint format typecheck pytest npm-deps redis-deps chromium-deps js-build dist lock clean

# Exact Python versions installed here (pyproject.toml keeps ranges for people
# who install durasync as a library). `make lock` refreshes it on purpose.
CONSTRAINTS := constraints.txt
PIP := $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.installed

# Re-resolve the newest versions pyproject.toml allows into constraints.txt, in
# a throw-away venv. Run `make test` afterwards and commit both files together.
LOCK_EXTRAS ?= dev
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e '.[$(LOCK_EXTRAS)]'
	{ sed -n '1,3p' $(CONSTRAINTS); \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v '^#' \
	    | grep -v -e '^setuptools==' -e '^wheel==' | sort -f; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-lock

# npm packages the tests drive (conformance suite, reference client/server),
# installed with `npm ci`: exactly the lock's versions, and the lock is never
# rewritten (refresh it on purpose with `npm install` in that directory).
npm-deps:
	@for d in $(NPM_DIRS); do \
	  if [ ! -f $$d/node_modules/.durasync-installed ] || [ $$d/package-lock.json -nt $$d/node_modules/.durasync-installed ]; then \
	    echo "npm ci in $$d"; (cd $$d && npm ci --no-audit --no-fund --loglevel=error) && touch $$d/node_modules/.durasync-installed || exit 1; \
	  fi; \
	done

# redis-server for the cluster tests: Debian's package, installed
# when missing (as root, or through sudo when it is available).
redis-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	}
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required: apt-get install redis-server" >&2; exit 1; }

# chromium for the real-browser tests (tests/js_client, bench/browser.py), driven by Playwright
# with executable_path: Debian's package, installed when missing (never `playwright install`).
chromium-deps:
	@[ -x $(CHROMIUM) ] || { \
	  echo "installing chromium (Debian package)"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	}
	@[ -x $(CHROMIUM) ] || { echo "chromium is required: apt-get install chromium" >&2; exit 1; }

# The browser client (js/): esbuild bundle js/dist/durasync.mjs (+ .d.ts, the node replay twin),
# copied to src/durasync/static/ where `durasync serve` serves it and the wheel ships it.
JS_SOURCES := $(shell find js/src -name '*.ts' 2>/dev/null) js/build.mjs js/package-lock.json js/tsconfig.json
js/dist/durasync.mjs: $(JS_SOURCES) | npm-deps
	node js/build.mjs

js-build: npm-deps js/dist/durasync.mjs
	@[ -f src/durasync/static/durasync.mjs ] || node js/build.mjs

# A wheel in ./dist with the browser bundle inside.
dist: $(VENV)/.installed js-build
	$(BIN)/python -m pip wheel --no-deps --quiet -w dist .

run: $(VENV)/.installed js-build
	@echo "demo: open http://$(HOST):$(PORT)/demo/?room=lab in two windows"
	$(BIN)/durasync serve --host $(HOST) --port $(PORT) --data $(DATA)

# A two-node cluster on loopback for trying it: redis-server (AOF,
# appendfsync always, data in ./durasync-cluster/redis) on port 6390 plus
# `durasync serve --redis` on ports 4437 and 4438. Ctrl-C stops all three.
run-cluster: $(VENV)/.installed redis-deps
	$(BIN)/python scripts/run_cluster.py --dir ./durasync-cluster --ports 4437,4438 --host $(HOST)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

typecheck: $(VENV)/.installed-dev npm-deps
	$(BIN)/mypy
	cd js && node node_modules/typescript/bin/tsc --noEmit -p tsconfig.json

# The browser tests launch $(CHROMIUM) (tests/browsers.py reads DURASYNC_CHROMIUM).
pytest: $(VENV)/.installed-dev npm-deps redis-deps chromium-deps js-build
	DURASYNC_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
	rm -rf $(addsuffix /node_modules,$(NPM_DIRS)) js/dist
