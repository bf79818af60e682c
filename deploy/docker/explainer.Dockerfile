# syntax=docker/dockerfile:1.7
# recsys explainer: LLM reasons and llm_only re-rank, with template fallback
# Build from the repository root:  docker buildx bake -f deploy/docker/docker-bake.hcl explainer
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with only this service's extra --------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# llama-cpp-python (pulled in by the offline default LLM) compiles from source.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU build of torch first (its own layer, cached across code changes): a bare `torch` requirement
# would pull the multi-GB CUDA build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY tools ./tools
# The project itself, from this checkout (its dependencies are ranges in pyproject.toml).
# Portable AVX2 llama.cpp, not -march=native (see the Makefile): the image runs on other CPUs.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
# hadolint ignore=DL3013
RUN pip install ".[explainer]"

# ---- runtime: slim, non-root, read-only-root friendly -------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="recsys-explainer" \
      org.opencontainers.image.description="recsys explainer: LLM reasons and llm_only re-rank, with template fallback" \
      org.opencontainers.image.licenses="Apache-2.0"
# OpenMP runtime for llama.cpp and torch.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 recsys \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/recsys --no-create-home --shell /usr/sbin/nologin recsys \
    && mkdir -p /var/lib/recsys /var/cache/recsys \
    && chown 10001:10001 /var/lib/recsys /var/cache/recsys
COPY --from=builder /opt/venv /opt/venv
# Writes go to RECSYS_HOME (a volume in Kubernetes), the model cache and /tmp only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECSYS_HOME=/var/lib/recsys \
    RECSYS_LOG_JSON=true \
    HF_HOME=/var/cache/recsys/huggingface \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8003
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/healthz', timeout=4)"]
ENTRYPOINT ["recsys"]
CMD ["serve", "explainer", "--host", "0.0.0.0", "--port", "8003"]
