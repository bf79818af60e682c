# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench clean images

# llama-cpp-python (the offline default LLM) compiles llama.cpp from source. Portable AVX2 code, not
# -march=native: the native build of 0.3.36 segfaults on the first token on virtualised AVX-512 CPUs
# (seen on this project's Xeon VMs), and an image built on one machine must run on others.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# The dashboard's browser tests drive Debian's Chromium (Playwright with executable_path; no browser
# download). Installed here so `make test` works on a fresh machine (Debian/Ubuntu, as root or with sudo).
CHROMIUM_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

$(STAMP): pyproject.toml
	command -v chromium >/dev/null 2>&1 || ($(SUDO) apt-get update -qq && $(SUDO) $(CHROMIUM_INSTALL))
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q -e '.[all]'
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
