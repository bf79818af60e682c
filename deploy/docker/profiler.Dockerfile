# syntax=docker/dockerfile:1.7
# recsys profiler: the LLM profile worker (GPU) and its Kafka trigger consumer.
# Build from the repository root:  docker buildx bake -f deploy/docker/docker-bake.hcl profiler
# The GPU build of torch is chosen by TORCH_VARIANT (cu126, cu128, ...; cpu for a CPU-only image);
# the CUDA runtime base only has to be at least as new as that variant. Torch wheels carry their CUDA
# libraries; the base brings the driver-facing userland and the NVIDIA container runtime settings.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---- builder ------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS builder
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Ubuntu 24.04's python3 is 3.12 (the project needs >= 3.11); build tools for llama-cpp-python.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cu128
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY tools ./tools
# The project itself, from this checkout (its dependencies are ranges in pyproject.toml).
# Portable AVX2 llama.cpp, not -march=native (see the Makefile): the image runs on other CPUs.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
# hadolint ignore=DL3013
RUN pip install ".[profiler]"

# ---- runtime ------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runtime
LABEL org.opencontainers.image.title="recsys-profiler" \
      org.opencontainers.image.description="recsys profiler: LLM user profiles on GPU (Celery worker) and trigger" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 recsys \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/recsys --no-create-home --shell /usr/sbin/nologin recsys \
    && mkdir -p /var/lib/recsys /var/cache/recsys \
    && chown 10001:10001 /var/lib/recsys /var/cache/recsys
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECSYS_HOME=/var/lib/recsys \
    RECSYS_LOG_JSON=true \
    RECSYS_DEVICE=cuda \
    HF_HOME=/var/cache/recsys/huggingface \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
# A Celery worker serves no HTTP: Kubernetes watches the process; no HEALTHCHECK.
ENTRYPOINT ["recsys"]
CMD ["worker", "profiler"]
