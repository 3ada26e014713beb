# The two commands a newcomer needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed-stamp
BIN := $(VENV)/bin

.PHONY: install run train test test-fast lint lock clean

# Installs (or refreshes) .venv whenever the lock file or pyproject.toml changed.
$(STAMP): requirements.lock pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh
	@touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/handoff train

run: train
	$(BIN)/handoff serve

# Every tier: tests/unit, tests/integration (a server, a trained model, PostgreSQL, Redis), tests/e2e.
test: install
	$(BIN)/pytest

# The unit tier alone: no trained model, no server, no database server (well under a minute).
test-fast: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Re-resolve the dependency set from pyproject.toml into requirements.lock (needs PyPI).
lock:
	rm -rf /tmp/handoff-lock-venv
	$$(scripts/find-python.sh) -m venv /tmp/handoff-lock-venv
	/tmp/handoff-lock-venv/bin/pip install --quiet --upgrade pip
	/tmp/handoff-lock-venv/bin/pip install --quiet -e '.[dev]'
	/tmp/handoff-lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock
	@echo "requirements.lock: $$(wc -l < requirements.lock) packages"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
