# syntax=docker/dockerfile:1.7
# recsys als: ALS serving API, training worker/scheduler, retraining job (Spark driver) and, with a
# k8s:// master, the Spark executors too (the entrypoint starts one when called with `executor`).
# Build from the repository root:  docker buildx bake -f deploy/docker/docker-bake.hcl als
# Bookworm: it ships openjdk-17 (Spark 4 supports Java 17 and 21).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with the als extra (pyspark) ----------------------------------------
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
RUN pip install ".[als]"

# ---- runtime: Java 17 + the venv, non-root -----------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="recsys-als" \
      org.opencontainers.image.description="recsys als: Spark ALS training, serving and Spark executors" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini reaps the JVM children Spark forks; procps gives Spark's scripts `ps`.
# hadolint ignore=DL3008
RUN apt-get update \
    && mkdir -p /usr/share/man/man1 \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/default-java-17
RUN groupadd --gid 10001 recsys \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/recsys --no-create-home --shell /usr/sbin/nologin recsys \
    && mkdir -p /var/lib/recsys /var/cache/recsys \
    && chown 10001:10001 /var/lib/recsys /var/cache/recsys
COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/als-entrypoint.sh /usr/local/bin/als-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JAVA_HOME=/usr/lib/jvm/default-java-17 \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    RECSYS_HOME=/var/lib/recsys \
    RECSYS_LOG_JSON=true \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8004
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8004/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--", "als-entrypoint"]
CMD ["serve", "als", "--host", "0.0.0.0", "--port", "8004"]
