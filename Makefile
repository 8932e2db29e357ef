# flask-maintenance-tasks developer entry points.  Everything bootstraps itself
# on a fresh Debian 12 machine: `make test`, `make demo`.
#
#   make test PYTEST_ARGS='-x -k resume'     pass options through to pytest
#   make test PYTEST_JOBS=0                  run the suite in one process (no xdist)
#   MAINTENANCE_TASKS_TEST_DATABASE_URL= make test   run without PostgreSQL
#   make reliability ARGS='--chaos 600 --seed 7'    random faults for 10 minutes (chaos mode)
#   make bench BENCH_ARGS='--section reaction'      pass options to python -m benchmarks
#   make docs                                        HTML docs in docs/_build/html

VENV        := .venv
PY          := $(VENV)/bin/python
SRC         := flask_maintenance_tasks tests sample_app
PYTEST_ARGS ?=
# pytest-xdist workers: two per core, as most tests wait on real workers, Redis and the
# databases rather than compute (PYTEST_JOBS=0 runs the suite in one process)
PYTEST_JOBS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))
BENCH_ARGS  ?=
# options of python -m benchmarks.reliability, e.g. ARGS='--chaos 600 --seed 7'
ARGS        ?=
# -E: read every page again, so no warning hides in a cached one; -W --keep-going:
# every warning is reported, and any warning fails the build
SPHINX      := $(VENV)/bin/sphinx-build -E -W --keep-going -b html docs docs/_build/html

.DEFAULT_GOAL := help
.PHONY: help bootstrap venv test docs reliability lint typecheck demo bench clean messages

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## install Debian packages, create .venv, start Redis and PostgreSQL
	@scripts/bootstrap.sh

venv: ## only create/refresh .venv (no apt, no services)
	@scripts/bootstrap.sh venv

# The test database URL comes from .venv/test-env (written by bootstrap) unless
# it is already set; set but empty means "no PostgreSQL".  exec: pytest's exit
# status is the recipe's.
WITH_TEST_DB = if [ -z "$${MAINTENANCE_TASKS_TEST_DATABASE_URL+set}" ] && [ -f $(VENV)/test-env ]; then \
		set -a; . ./$(VENV)/test-env; set +a; \
	fi; \
	if [ -z "$${MAINTENANCE_TASKS_TEST_DATABASE_URL:-}" ]; then \
		unset MAINTENANCE_TASKS_TEST_DATABASE_URL; \
		echo "make: MAINTENANCE_TASKS_TEST_DATABASE_URL unset, PostgreSQL will be skipped"; \
	else \
		echo "make: MAINTENANCE_TASKS_TEST_DATABASE_URL=$$MAINTENANCE_TASKS_TEST_DATABASE_URL"; \
	fi

test: bootstrap ## check the layers and catalogues, build the docs (warnings fail it), run the test suite
	@$(VENV)/bin/lint-imports --no-cache >/dev/null || $(VENV)/bin/lint-imports --no-cache
	@$(PY) scripts/catalogues.py check >/dev/null
	@$(SPHINX) -q
	@$(WITH_TEST_DB); exec $(PY) -m pytest -n $(PYTEST_JOBS) $(PYTEST_ARGS)

docs: venv ## build the HTML documentation into docs/_build/html (warnings are errors)
	$(SPHINX)
	@echo "make: open docs/_build/html/index.html"

reliability: bootstrap ## inject every fault into real workers and print the outcome table
	@$(WITH_TEST_DB); exec $(PY) -m benchmarks.reliability $(ARGS)

lint: venv ## ruff, the layers contract (import-linter), the translation catalogues
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/catalogues.py check
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)

messages: venv ## extract the messages into the .pot and refresh every language's .po
	$(PY) scripts/catalogues.py update

typecheck: venv ## mypy (strict) on the package
	$(VENV)/bin/mypy flask_maintenance_tasks

demo: bootstrap ## serve the sample app's dashboard (http://127.0.0.1:5000/maintenance_tasks/) with a worker
	@scripts/demo.sh

bench: bootstrap ## run the benchmarks and print their tables (BENCH_ARGS=...)
	@$(WITH_TEST_DB); exec $(PY) -m benchmarks $(BENCH_ARGS)

clean: ## remove .venv, caches, build output and instance/*.db
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage .coverage.* \
		build dist *.egg-info docs/_build
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -f instance/*.db
