# FeatureGap: the doors are `make demo`, `make test`, `make lint`, `make bench`.
# `make demo` installs only what the app needs; `make test`, `make lint` and `make bench`
# add the test extra (pytest, playwright, ruff, mypy, Quantus, …) on top.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
APP_STAMP := $(VENV)/.installed-app-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test demo serve test lint bench bench-ray clean

# pip's own progress shows: the first install downloads nothing here but takes minutes.
$(APP_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e .
	rm -f $(VENV)/.installed-app-*
	touch $(APP_STAMP)

$(TEST_STAMP): $(APP_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-test-*
	touch $(TEST_STAMP)

install: $(APP_STAMP)

install-test: $(TEST_STAMP)

demo: $(APP_STAMP)
	$(BIN)/featuregap serve --demo --host $(HOST) --port $(PORT)

serve: $(APP_STAMP)
	$(BIN)/featuregap serve --host $(HOST) --port $(PORT)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/ruff format --check app tests benchmarks
	$(BIN)/mypy --strict app

bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks

bench-ray: $(TEST_STAMP)
	$(BIN)/python -m benchmarks ray

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
