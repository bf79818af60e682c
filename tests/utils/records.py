"""Test data builders and helpers: reviews and items, a Kafka topic reader, a live uvicorn server."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from kafka import KafkaConsumer

from shared.broker import free_port, wait_for_port
from shared.config import CommonSettings
from shared.kafka import _common
from tools.evaluation.split import Interaction


def user_id() -> str:
    """An Amazon-like 28-character user id, unique per call."""
    return ("A" + uuid.uuid4().hex.upper())[:28]


def review(**over: Any) -> dict[str, Any]:
    base = {
        "rating": 5.0,
        "title": "Great wig",
        "text": "Soft, natural looking, the lace is thin.",
        "images": [],
        "asin": "B0TEST0001",
        "parent_asin": "B0TEST0001",
        "user_id": user_id(),
        "timestamp": 1_700_000_000_000,
        "helpful_vote": 0,
        "verified_purchase": True,
    }
    return base | over


def item(**over: Any) -> dict[str, Any]:
    base = {
        "main_category": "All Beauty",
        "title": "Long wavy wig",
        "average_rating": 4.2,
        "rating_number": 12,
        "features": ["heat resistant fiber"],
        "description": ["A wig."],
        "price": 19.99,
        "images": [],
        "videos": [],
        "store": "WigCo",
        "categories": [],
        "details": {"Color": "Black"},
        "parent_asin": "B0" + uuid.uuid4().hex[:8].upper(),
        "bought_together": None,
    }
    return base | over


def read_topic(
    settings: CommonSettings,
    topic: str,
    *,
    until: Callable[[list[Any]], bool],
    match: Callable[[Any], bool] = lambda _: True,
    timeout_s: float = 30.0,
) -> list[Any]:
    """Read a topic from the beginning (no group) and return matching records once ``until`` holds."""
    consumer = KafkaConsumer(
        settings.topic(topic),
        **_common(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                found.extend(r for r in batch if match(r))
            if until(found):
                return found
        return found
    finally:
        consumer.close()


def value(record: Any) -> Any:
    return orjson.loads(record.value)


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if not wait_for_port("127.0.0.1", port, 20):
        raise RuntimeError("uvicorn did not start")
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def pending_outbox(settings: CommonSettings, keys: set[str]) -> int:
    """Outbox rows with these keys not yet published."""
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import OutboxEvent

    with session_scope(settings.database_url) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None), OutboxEvent.key.in_(keys))
            )
            or 0
        )


def messy_log(seed: int, *, users: int, items: int, max_reviews: int = 9) -> list[Interaction]:
    """A random review log with what real ones have and neighbour lists must survive: ties in time (a
    third of a user's steps share the day), repeats of an item, exact duplicate rows, users with one
    review, and ``solo-user``'s one review of ``solo-item``, which nobody else reviewed."""
    rng = random.Random(seed)
    out = []
    for u in range(users):
        t = 1_600_000_000_000 + rng.randrange(10) * 86_400_000
        for _ in range(rng.randrange(1, max_reviews + 1)):
            t += rng.choice([0, 0, 86_400_000])
            out.append(Interaction(user_id=f"u{u:02d}", parent_asin=f"i{rng.randrange(items):02d}",
                                   rating=float(rng.randrange(1, 6)), timestamp=t))
    return out + [out[3], out[3], Interaction(user_id="solo-user", parent_asin="solo-item", rating=5.0, timestamp=1)]
