# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench clean images

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/recsys demo

# The import contract first (seconds): a boundary violation fails the run before the suite starts.
test: setup
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy shared services tools

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all

images:
	docker buildx bake -f deploy/docker/docker-bake.hcl

clean:
	-$(BIN)/recsys down
	rm -rf .recsys .pytest_cache .ruff_cache .mypy_cache
