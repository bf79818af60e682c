"""Hostile input on every ingest path (HTTP, raw topics, `recsys ingest`): a clear rejection, nothing
else blocked, nothing lost. Real PostgreSQL and a real broker."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from services.ingest.raw_consumer import make_loop
from shared.amazon import MAX_DEPTH, MAX_ID
from shared.db import session_scope
from shared.events import REVIEWS_DLQ, REVIEWS_RAW
from shared.kafka import ensure_topics, make_producer
from shared.models import Item, Review
from tests.utils.records import item, live_server, read_topic, review, user_id, value
from tools.ingest import IngestClient, ingest_file


def nested(levels: int) -> Any:
    """A JSON value ``levels`` deep (lists in lists); built without recursion."""
    node: Any = "bottom"
    for _ in range(levels):
        node = [node]
    return node


def deep_json(levels: int) -> bytes:
    """JSON text nested ``levels`` deep: too deep for ``orjson.dumps`` to build it from objects."""
    return b"[" * levels + b'"bottom"' + b"]" * levels


def _stored(settings: IngestSettings, user: str) -> list[Review]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(Review).where(Review.user_id == user).order_by(Review.timestamp)))


def test_a_deeply_nested_extra_field_is_rejected_and_the_rest_of_the_batch_stored(
    client: TestClient, ingest_settings: IngestSettings
) -> None:
    user = user_id()
    good = [review(user_id=user, timestamp=1_700_000_000_000 + i) for i in range(3)]
    deep = review(user_id=user, timestamp=1_700_000_000_100)
    # 300 levels: deeper than orjson recurses (254), the row hash raised TypeError and the batch gave 500.
    body = orjson.dumps({"reviews": [*good, {**deep, "extra": "PLACEHOLDER"}]}).replace(
        b'"PLACEHOLDER"', deep_json(300)
    )
    resp = client.post("/v1/reviews", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 202, resp.text
    doc = resp.json()
    assert doc["accepted"] == 3 and len(doc["rejected"]) == 1
    [rejected] = doc["rejected"]
    assert rejected["index"] == 3
    assert f"nested deeper than {MAX_DEPTH - 1} levels" in rejected["errors"][0]["message"]
    assert [r.timestamp for r in _stored(ingest_settings, user)] == [g["timestamp"] for g in good]


def test_one_deep_record_alone_is_a_422_with_the_reason(client: TestClient) -> None:
    resp = client.post("/v1/items", json={**item(), "details": {"a": nested(MAX_DEPTH + 5)}})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "validation_error"
    assert "nested deeper than" in resp.json()["error"]["message"]
    # Real metadata nests a few levels: that stays accepted.
    assert client.post("/v1/items", json={**item(), "details": {"a": nested(4)}}).status_code == 202


def test_ids_as_long_as_validation_allows_are_stored_on_postgresql(
    client: TestClient, ingest_settings: IngestSettings
) -> None:
    """One limit for validation and the columns: a 100- and a 128-character id were VARCHAR(64) failures."""
    for length in (100, MAX_ID):
        asin = "A" * length
        user = user_id()[:8] + "u" * (length - 8)
        assert client.post("/v1/items", json=item(parent_asin=asin)).status_code == 202
        resp = client.post("/v1/reviews", json=review(user_id=user, parent_asin=asin, asin=asin))
        assert resp.status_code == 202, resp.text
        with session_scope(ingest_settings.database_url) as s:
            assert s.get(Item, asin) is not None
            assert [r.parent_asin for r in s.scalars(select(Review).where(Review.user_id == user))] == [asin]
    too_long = client.post("/v1/reviews", json=review(parent_asin="A" * (MAX_ID + 1)))
    assert too_long.status_code == 422 and "parent_asin" in too_long.text


def test_a_poison_record_on_the_raw_topic_is_dead_lettered_and_blocks_nothing(
    ingest_settings: IngestSettings, unique: str
) -> None:
    """Deep nesting and an over-long id on reviews.raw.v1: both to the DLQ with the reason; the good
    records behind them (same partition and others) are stored, and the consumer moves on."""
    ensure_topics(ingest_settings, [REVIEWS_RAW, REVIEWS_DLQ])
    user = user_id()
    others = [user_id() for _ in range(6)]  # other keys: other partitions too
    producer = make_producer(ingest_settings, value_serializer=None, key_serializer=None)
    deep = orjson.dumps({**review(user_id=user), "extra": "X"}).replace(b'"X"', deep_json(400))
    producer.send(REVIEWS_RAW, key=user.encode(), value=deep)
    producer.send(REVIEWS_RAW, key=user.encode(), value=orjson.dumps(review(user_id=user, parent_asin="B" * 200)))
    good_same = review(user_id=user, timestamp=1_700_000_000_500, parent_asin="C" * 100)
    producer.send(REVIEWS_RAW, key=user.encode(), value=orjson.dumps(good_same))
    for u in others:
        producer.send(REVIEWS_RAW, key=u.encode(), value=orjson.dumps(review(user_id=u)))
    producer.flush(timeout=30)
    producer.close()

    loop, handler = make_loop(ingest_settings, group_id=f"ingest-raw-poison-{unique}")
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _stored(ingest_settings, user) and all(_stored(ingest_settings, u) for u in others):
                break
            time.sleep(0.3)
        assert [r.parent_asin for r in _stored(ingest_settings, user)] == [good_same["parent_asin"]]
        assert all(len(_stored(ingest_settings, u)) == 1 for u in others)
        letters = read_topic(
            ingest_settings, REVIEWS_DLQ, until=lambda f: len(f) >= 2, match=lambda r: r.key == user.encode()
        )
        reasons = sorted(value(r)["error"] for r in letters)
        assert len(reasons) == 2, reasons
        assert any("nested deeper than" in r for r in reasons)
        assert any("parent_asin" in r for r in reasons)
    finally:
        loop.stop()
        thread.join(timeout=30)
        handler.close()


def test_recsys_ingest_reports_a_deep_line_and_sends_the_rest(
    ingest_settings: IngestSettings, tmp_path: Path
) -> None:
    user = user_id()
    lines = [orjson.dumps(review(user_id=user, timestamp=1_700_000_000_000 + i)) for i in range(3)]
    lines.insert(1, deep_json(100_000))  # deeper than Python's json recurses: it raised RecursionError
    lines.insert(2, orjson.dumps({**review(user_id=user), "x": "Y"}).replace(b'"Y"', deep_json(300)))
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with live_server(create_app(ingest_settings.model_copy(update={"RELAY_ENABLED": False}))) as url:
        client = IngestClient(url=url, api_key=None)
        try:
            tally = ingest_file(client, kind="reviews", path=path, batch_size=10)
        finally:
            client.close()
    assert tally.accepted == 3 and tally.rejected == 2
    assert any("nested too deeply" in e for e in tally.examples)
    assert len(_stored(ingest_settings, user)) == 3


def test_nul_inside_json_fields_is_dropped_not_a_500(client: TestClient, ingest_settings: IngestSettings) -> None:
    """PostgreSQL's JSON cannot hold U+0000: found by the fuzzer as a 500 for NUL in a details key or value,
    a feature, an image or an unknown field. It carries no meaning there and is dropped; in an id it is a 422."""
    asin = f"B0NUL{user_id()[:10]}"
    doc = {**item(parent_asin=asin), "details": {"a\u0000": "x\u0000"}, "features": ["x\u0000y"],
           "images": ["i\u0000"], "x\u0000": {"k\u0000": "v\u0000"}}
    assert client.post("/v1/items", json=doc).status_code == 202
    with session_scope(ingest_settings.database_url) as s:
        row = s.get(Item, asin)
        assert row is not None
        assert row.details == {"a": "x"} and row.features == ["xy"]
        assert row.extra["images"] == ["i"] and row.extra["x"] == {"k": "v"}
    user = user_id()
    resp = client.post("/v1/reviews", json={**review(user_id=user), "k\u0000": 1, "images": ["x\u0000"]})
    assert resp.status_code == 202, resp.text
    assert client.post("/v1/reviews", json=review(user_id="U\u0000X")).status_code == 422
