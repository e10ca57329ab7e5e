# The two commands: `make run` starts the whole stack; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install clean

install: $(STAMP)

# The browser assets come from npm (web/package-lock.json) at install time, never from a CDN at run
# time: Chart.js is copied where the gateway serves its static files; the browser tests read axe-core
# from web/node_modules. A changed lock file re-runs the install.
VENDOR := services/gateway/web/static/vendor

$(STAMP): pyproject.toml web/package.json web/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp web/node_modules/chart.js/dist/chart.umd.min.js $(VENDOR)/chart.umd.min.js
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/selfex up --demo-operator

# The checks first (lint, format, types, the import contracts of pyproject.toml), then the suite.
# pytest exits 5 when it collects no tests; that fails `make test` too, and says why.
# Two workers, each with its own embedded broker and store, a test file each at a time: most of a
# test's time is spent waiting on the broker, so two share two cores well (15 min alone, 8 min so).
# --durations: the slowest tests, in every run's output, to keep the whole under 15 minutes.
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=15
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS) || { code=$$?; \
	  if [ $$code -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$code; }

clean:
	rm -rf $(VENV) .selfex .pytest_cache .hypothesis web/node_modules $(VENDOR)
