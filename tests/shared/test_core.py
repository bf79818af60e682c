"""The shared core: settings, schemas, events, migrations and the consumer loop on real infrastructure."""
from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect

from shared.amazon import ItemIn, ReviewIn, item_text
from shared.config import CommonSettings
from shared.db import get_engine, upgrade_database
from shared.events import ReviewEvent
from shared.kafka import ConsumerLoop, decode_value, ensure_topics, make_producer

GOOD = {"rating": 5.0, "title": "Great", "text": "Soft wig", "images": [], "asin": "B01",
        "parent_asin": "B01", "user_id": "U1", "timestamp": 1700000000000, "helpful_vote": 0, "verified_purchase": True}


def test_api_keys_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_API_KEYS", "a, b,,c")
    assert CommonSettings().API_KEYS == ["a", "b", "c"]


def test_production_refuses_embedded_sqlite() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        CommonSettings(ENVIRONMENT="production", DATABASE_URL="")


@pytest.mark.parametrize("field,value", [("rating", 0), ("rating", 6), ("rating", "five"), ("user_id", ""),
                                         ("parent_asin", "  "), ("timestamp", 1700000000)])
def test_review_schema_rejects(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        ReviewIn.model_validate({**GOOD, field: value})
    assert field in str(exc.value)


def test_review_schema_keeps_unknown_fields_and_tolerates_missing_optional() -> None:
    optional = ("helpful_vote", "verified_purchase")
    r = ReviewIn.model_validate({k: v for k, v in GOOD.items() if k not in optional} | {"shop_extra": 1})
    assert r.helpful_vote is None and r.extra_fields == {"shop_extra": 1}


def test_item_text_skips_missing_parts() -> None:
    item = ItemIn.model_validate({"parent_asin": "X", "title": "Lace wig", "price": "None", "features": None})
    assert item.price is None
    assert item_text(item) == "Lace wig"
    full = ItemIn.model_validate({"parent_asin": "X", "title": "Lace wig", "features": ["soft"],
                                  "description": ["A wig."], "main_category": "All Beauty"})
    assert item_text(full) == "Lace wig. Features: soft. Description: A wig.. Category: All Beauty"


def test_event_ids_are_stable_for_the_same_fact() -> None:
    a = ReviewEvent(user_id="U", parent_asin="P", timestamp=1, rating=5)
    b = ReviewEvent(user_id="U", parent_asin="P", timestamp=1, rating=4)
    c = ReviewEvent(user_id="U", parent_asin="P", timestamp=2, rating=5)
    assert a.event_id == b.event_id != c.event_id


def test_migrations_run_on_sqlite_and_postgres(tmp_path, pg_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_database(sqlite_url)
    for url in (sqlite_url, pg_url):
        tables = set(inspect(get_engine(url)).get_table_names())
        assert {"reviews", "items", "outbox", "profiles", "als_models", "explanations"} <= tables


def test_consumer_loop_retries_a_failed_batch_and_commits_after_success(settings: CommonSettings,
                                                                       unique: str) -> None:
    topic = f"core-{unique}"
    ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    for i in range(3):
        producer.send(topic, key="k", value={"i": i})
    producer.flush()
    producer.close()

    seen: list[int] = []
    failures = {"left": 1}

    def handler(records):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("downstream unavailable")
        seen.extend(decode_value(r)["i"] for r in records)
        if len(seen) >= 3:
            loop.stop()

    loop = ConsumerLoop(settings=settings, topics=[topic], group_id=f"g-{unique}", handler=handler,
                        retry_backoff_s=0.2)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    assert seen == [0, 1, 2]  # the failed batch was redelivered, nothing lost, nothing doubled

    # A new consumer in the same group starts after the committed offsets: nothing is replayed.
    replayed: list[int] = []
    loop2 = ConsumerLoop(settings=settings, topics=[topic], group_id=f"g-{unique}",
                         handler=lambda recs: replayed.extend(decode_value(r)["i"] for r in recs),
                         idle_callback=None)
    timer = threading.Timer(12, loop2.stop)
    timer.start()
    loop2.run()
    timer.cancel()
    assert replayed == []


def test_consumer_loop_survives_a_batch_slower_than_max_poll_interval(settings: CommonSettings,
                                                                     unique: str) -> None:
    """A handler that outlives max_poll_interval_ms gets its commit refused by the group: the loop keeps
    running, rejoins, and the batch is delivered again (handlers are idempotent)."""
    topic = f"slow-{unique}"
    ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    for i in range(2):
        producer.send(topic, key="k", value={"i": i})
    producer.flush()
    producer.close()
    fast = settings.model_copy(update={"KAFKA_MAX_POLL_INTERVAL_MS": 3_000, "KAFKA_SESSION_TIMEOUT_MS": 3_000})
    calls: list[list[int]] = []

    def handler(records):  # type: ignore[no-untyped-def]
        calls.append([decode_value(r)["i"] for r in records])
        if len(calls) == 1:
            time.sleep(6)  # twice the poll interval: the group evicts this member meanwhile
        else:
            loop.stop()

    loop = ConsumerLoop(settings=fast, topics=[topic], group_id=f"g-{unique}", handler=handler)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    t.join(timeout=90)
    assert not t.is_alive(), "the loop did not come back to the redelivered batch"
    assert len(calls) >= 2 and calls[0] == [0, 1] and calls[1][0] == 0  # redelivered from the start


@pytest.mark.parametrize("after_idle_s", [0.0, 3600.0])
def test_pool_replaces_connections_the_server_killed(pg_url: str, after_idle_s: float) -> None:
    """Idle pooled connections are pinged before use; busy ones are not (no round trip per checkout),
    so a server-side kill costs at most one failed statement, after which the pool reconnects."""
    from sqlalchemy import create_engine, exc, text

    from shared.db import ping_idle_connections

    engine = create_engine(pg_url, pool_size=2, max_overflow=0)
    ping_idle_connections(engine, after_idle_s=after_idle_s)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            mine = c.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as a:
            assert a.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": mine}).scalar() is True
        time.sleep(0.2)
        if after_idle_s == 0.0:  # pinged at checkout: the dead connection is replaced transparently
            with engine.connect() as c:
                assert c.execute(text("SELECT pg_backend_pid()")).scalar() != mine
        else:  # reused without a ping: that statement fails once, then the pool has reconnected
            with pytest.raises(exc.OperationalError), engine.connect() as c:
                c.execute(text("SELECT 1"))
            with engine.connect() as c:
                assert c.execute(text("SELECT pg_backend_pid()")).scalar() != mine
    finally:
        engine.dispose()
        admin.dispose()


def test_lru_cache_evicts_least_recently_used_and_can_hold_none() -> None:
    from shared.lru import LruCache

    cache: LruCache[str, int | None] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", None)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)  # evicts "b"
    assert cache.lookup("b") == (False, None) and cache.lookup("c") == (True, 3)
    cache.put("b", None)
    assert cache.lookup("b") == (True, None) and cache.get("a") is None and len(cache) == 2
    off: LruCache[str, int] = LruCache(0)
    off.put("x", 1)
    assert off.lookup("x") == (False, None)
