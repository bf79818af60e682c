# syntax=docker/dockerfile:1.7
# recsys dashboard: operator pages over the other services (behind the admin key)
# Build from the repository root:  docker buildx bake -f deploy/docker/docker-bake.hcl dashboard
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with only this service's extra --------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY tools ./tools
# The project itself, from this checkout (its dependencies are ranges in pyproject.toml).
# hadolint ignore=DL3013
RUN pip install ".[dashboard]"

# ---- runtime: slim, non-root, read-only-root friendly -------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="recsys-dashboard" \
      org.opencontainers.image.description="recsys dashboard: operator pages over the other services (behind the admin key)" \
      org.opencontainers.image.licenses="Apache-2.0"
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
EXPOSE 8005
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8005/healthz', timeout=4)"]
ENTRYPOINT ["recsys"]
CMD ["serve", "dashboard", "--host", "0.0.0.0", "--port", "8005"]
