"""Profiler fixtures: settings on the session's real PostgreSQL/broker/Redis, the real default LLM
(loaded once), a small beauty catalog, and helpers to write reviews and run a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.profiler.config import ProfilerSettings
from shared import outbox
from shared.config import CommonSettings
from shared.db import session_scope
from shared.models import Item, Review
from tests.utils.settings import service_settings

ROOT = Path(__file__).resolve().parents[2]

CATALOG = [
    (
        "face serum",
        "Hydrating Face Serum with Hyaluronic Acid",
        ["Lightweight serum for dry skin, fragrance free."],
    ),
    ("night cream", "Retinol Night Cream for Dry Skin", ["Rich night cream, anti aging, fragrance free."]),
    (
        "sunscreen",
        "Mineral Sunscreen SPF 50 Face Lotion",
        ["Lightweight sunscreen, no white cast, dry skin."],
    ),
    ("lipstick", "Matte Lipstick Long Lasting Red", ["Long lasting matte lipstick in classic red."]),
    ("shampoo", "Argan Oil Shampoo for Dry Hair", ["Gentle shampoo with argan oil for dry hair."]),
    ("conditioner", "Argan Oil Conditioner for Dry Hair", ["Conditioner with argan oil, sulfate free."]),
    ("mascara", "Waterproof Volume Mascara Black", ["Waterproof mascara, long lasting volume."]),
    (
        "face wash",
        "Gentle Foaming Face Wash for Sensitive Skin",
        ["Foaming face wash, fragrance free, gentle."],
    ),
]


@pytest.fixture(scope="session", autouse=True)
def _close_cached_publishers() -> Iterator[None]:
    """The direct-publish producers are cached per process: close them before the broker goes away."""
    yield
    outbox.close_publishers()


@pytest.fixture(scope="session")
def prof_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def psettings(settings: CommonSettings, prof_id: str) -> ProfilerSettings:
    """Profiler settings isolated by topic prefix and queue; short generations keep the CPU tests quick."""
    return service_settings(
        ProfilerSettings,
        settings,
        TOPIC_PREFIX=f"prof{prof_id}.",
        PROFILER_QUEUE=f"profiler-{prof_id}",
        PROFILER_GROUP=f"profiler-trigger-{prof_id}",
        PROFILER_DEBOUNCE_S=1.0,
        PROFILER_MAX_NEW_TOKENS=96,
        PROFILER_SUMMARY_TOKENS=72,
        PROFILER_HISTORY_CHARS=800,
        LLM_BACKEND="llama_cpp",
    )


@pytest.fixture(scope="session")
def llm(psettings: ProfilerSettings) -> Any:
    """The real default model (SmolLM2-135M GGUF on llama.cpp), loaded once per session."""
    from shared.llm import get_llm

    return get_llm(psettings)


@pytest.fixture(scope="session")
def catalog(psettings: ProfilerSettings, prof_id: str) -> dict[str, str]:
    """A small beauty catalog in the DB; returns {short name: parent_asin}."""
    asins = {}
    with session_scope(psettings.database_url) as s:
        for i, (short, title, desc) in enumerate(CATALOG):
            asin = f"P{prof_id}{i:03d}"
            asins[short] = asin
            s.merge(
                Item(
                    parent_asin=asin,
                    title=title,
                    description=desc,
                    main_category="All Beauty",
                    features=[],
                    categories=[],
                    details={},
                    extra={},
                )
            )
    return asins


def add_reviews(
    settings: CommonSettings,
    user_id: str,
    reviews: list[tuple[str, float, str]],
    *,
    start_ts: int = 1_700_000_000_000,
) -> list[dict[str, Any]]:
    """Insert reviews ``(parent_asin, rating, text)`` for a user; returns them as dicts."""
    rows = []
    with session_scope(settings.database_url) as s:
        for i, (asin, rating, text) in enumerate(reviews):
            row = {
                "user_id": user_id,
                "parent_asin": asin,
                "timestamp": start_ts + i * 60_000,
                "rating": rating,
                "title": "",
                "text": text,
            }
            s.add(Review(**row, images=[], extra={}))
            rows.append(row)
    return rows


def worker_env(settings: ProfilerSettings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RECSYS_DATABASE_URL": settings.database_url,
            "RECSYS_KAFKA_BOOTSTRAP": settings.KAFKA_BOOTSTRAP,
            "RECSYS_CELERY_BROKER_URL": settings.celery_broker_url,
            "RECSYS_CELERY_RESULT_BACKEND": settings.celery_result_backend,
            "RECSYS_HOME": str(settings.HOME),
            "RECSYS_TOPIC_PREFIX": settings.TOPIC_PREFIX,
            "RECSYS_PROFILER_QUEUE": settings.PROFILER_QUEUE,
            "RECSYS_PROFILER_MAX_NEW_TOKENS": str(settings.PROFILER_MAX_NEW_TOKENS),
            "RECSYS_PROFILER_SUMMARY_TOKENS": str(settings.PROFILER_SUMMARY_TOKENS),
            "RECSYS_PROFILER_HISTORY_CHARS": str(settings.PROFILER_HISTORY_CHARS),
            "RECSYS_LLM_BACKEND": settings.LLM_BACKEND,
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def start_worker(settings: ProfilerSettings, log_path: Path, **extra: str) -> subprocess.Popen[bytes]:
    """A real Celery worker process (solo pool) on the test queue."""
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "services.profiler.tasks:celery_app",
        "worker",
        "-Q",
        settings.PROFILER_QUEUE,
        "-c",
        "1",
        "--pool",
        "solo",
        "--loglevel",
        "INFO",
        "-n",
        f"test-{uuid.uuid4().hex[:6]}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=worker_env(settings, **extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def worker_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "worker.log"
    yield path
