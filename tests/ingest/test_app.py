"""HTTP → DB → Kafka: the ingest API on real PostgreSQL and a real broker."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from shared.broker import free_port, start_broker
from shared.db import session_scope
from shared.events import ITEMS, REVIEWS
from shared.models import Item, OutboxEvent, Review, utcnow
from tests.utils.records import item, pending_outbox, read_topic, review, user_id, value


def _reviews_of(settings: IngestSettings, user: str) -> list[Review]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(Review).where(Review.user_id == user)))


def _outbox_count(settings: IngestSettings, key: str) -> int:
    with session_scope(settings.database_url) as s:
        return int(s.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.key == key)) or 0)


def test_review_round_trip_http_db_kafka(client: TestClient, ingest_settings: IngestSettings) -> None:
    r = review(colour="black", helpful_vote=3)
    resp = client.post("/v1/reviews", json=r)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": 1, "changed": 1, "rejected": []}

    rows = _reviews_of(ingest_settings, r["user_id"])
    assert len(rows) == 1
    assert rows[0].rating == 5.0 and rows[0].helpful_vote == 3
    assert rows[0].extra == {"colour": "black"}  # unknown fields are kept

    records = read_topic(
        ingest_settings,
        REVIEWS,
        until=lambda f: len(f) >= 1,
        match=lambda rec: rec.key == r["user_id"].encode(),
    )
    assert len(records) == 1
    event = value(records[0])
    assert event["type"] == "review.upserted"
    assert (event["user_id"], event["parent_asin"], event["timestamp"]) == (
        r["user_id"],
        r["parent_asin"],
        r["timestamp"],
    )
    assert event["event_id"]


def test_item_batch_round_trip(client: TestClient, ingest_settings: IngestSettings) -> None:
    items = [item(), item(price="$12.50", features=None, description="one line")]
    resp = client.post("/v1/items", json={"items": items})
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == 2
    with session_scope(ingest_settings.database_url) as s:
        stored = {
            i.parent_asin: i
            for i in s.scalars(select(Item).where(Item.parent_asin.in_([x["parent_asin"] for x in items])))
        }
    assert stored[items[1]["parent_asin"]].price == 12.5
    assert stored[items[1]["parent_asin"]].description == ["one line"]
    assert stored[items[0]["parent_asin"]].content_hash
    assert stored[items[0]["parent_asin"]].extra["videos"] == []
    keys = {x["parent_asin"].encode() for x in items}
    records = read_topic(
        ingest_settings, ITEMS, until=lambda f: len(f) >= 2, match=lambda rec: rec.key in keys
    )
    assert {value(rec)["parent_asin"] for rec in records} == {x["parent_asin"] for x in items}


def test_duplicate_post_stores_one_row_and_one_event(
    client: TestClient, ingest_settings: IngestSettings
) -> None:
    r = review()
    for _ in range(3):
        resp = client.post("/v1/reviews", json=r)
        assert resp.status_code == 202
    assert resp.json()["changed"] == 0
    assert len(_reviews_of(ingest_settings, r["user_id"])) == 1
    assert _outbox_count(ingest_settings, r["user_id"]) == 1
    # Same identity, different content: updated in place, one more event.
    resp = client.post("/v1/reviews", json=r | {"rating": 2.0})
    assert resp.json() == {"accepted": 1, "changed": 1, "rejected": []}
    rows = _reviews_of(ingest_settings, r["user_id"])
    assert [x.rating for x in rows] == [2.0]
    assert _outbox_count(ingest_settings, r["user_id"]) == 2


def test_duplicates_inside_one_batch(client: TestClient, ingest_settings: IngestSettings) -> None:
    r = review()
    resp = client.post(
        "/v1/reviews", json={"reviews": [r, r | {"rating": 3.0}, r | {"timestamp": r["timestamp"] + 1}]}
    )
    assert resp.status_code == 202
    rows = sorted(_reviews_of(ingest_settings, r["user_id"]), key=lambda x: x.timestamp)
    assert [(x.timestamp, x.rating) for x in rows] == [(r["timestamp"], 3.0), (r["timestamp"] + 1, 5.0)]
    assert _outbox_count(ingest_settings, r["user_id"]) == 2


def test_mixed_batch_stores_valid_and_reports_each_rejection(
    client: TestClient, ingest_settings: IngestSettings
) -> None:
    r = review()
    batch = [
        r,
        r | {"rating": 9, "timestamp": r["timestamp"] + 1},
        "not an object",
        r | {"timestamp": r["timestamp"] + 2},
        r | {"user_id": ""},
    ]
    resp = client.post("/v1/reviews", json={"reviews": batch})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["accepted"] == 2
    rejected = {x["index"]: x["errors"] for x in body["rejected"]}
    assert set(rejected) == {1, 2, 4}
    assert rejected[1][0]["field"] == "rating"
    assert "less than or equal to 5" in rejected[1][0]["message"]
    assert rejected[2][0]["message"] == "record must be a JSON object"
    assert rejected[4][0]["field"] == "user_id"
    assert sorted(x.timestamp for x in _reviews_of(ingest_settings, r["user_id"])) == [
        r["timestamp"],
        r["timestamp"] + 2,
    ]


BAD_REVIEWS: list[tuple[str, dict[str, Any], str]] = [
    ("rating 0", {"rating": 0}, "rating"),
    ("rating 6", {"rating": 6}, "rating"),
    ("rating as text", {"rating": "five"}, "rating"),
    ("rating as bool", {"rating": True}, "rating"),
    ("empty user_id", {"user_id": ""}, "user_id"),
    ("blank parent_asin", {"parent_asin": "   "}, "parent_asin"),
    ("timestamp in seconds", {"timestamp": 1_700_000_000}, "timestamp"),
    ("timestamp as text", {"timestamp": "yesterday"}, "timestamp"),
    ("text too long", {"text": "x" * 60_000}, "text"),
    ("images not a list", {"images": "a.jpg"}, "images"),
    ("negative helpful votes", {"helpful_vote": -1}, "helpful_vote"),
    ("huge helpful votes", {"helpful_vote": 10**30}, "helpful_vote"),
]


@pytest.mark.parametrize(("label", "change", "field"), BAD_REVIEWS, ids=[b[0] for b in BAD_REVIEWS])
def test_bad_review_gets_422_naming_the_field(
    client: TestClient, ingest_settings: IngestSettings, label: str, change: dict[str, Any], field: str
) -> None:
    r = review() | change
    resp = client.post("/v1/reviews", json=r)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "validation_error"
    assert field in err["message"]
    assert err["details"][0]["index"] == 0
    assert err["details"][0]["errors"][0]["field"] == field
    assert _reviews_of(ingest_settings, r["user_id"] or "none") == []


def test_missing_required_field(client: TestClient) -> None:
    r = review()
    del r["user_id"]
    resp = client.post("/v1/reviews", json=r)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"][0]["errors"][0] == {
        "field": "user_id",
        "message": "Field required",
        "type": "missing",
    }


def test_batch_of_only_bad_records_is_422_with_indexes(client: TestClient) -> None:
    resp = client.post("/v1/reviews", json={"reviews": [review(rating=0), review(rating=7)]})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["message"].startswith("record 0: rating:")
    assert [d["index"] for d in err["details"]] == [0, 1]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"rating": 5, "user_id": ', "not valid JSON"),
        (b"", "empty"),
        (b'{"rating": 5, "title": "caf\xe9 \xff"}', "UTF-8"),
        (b"\xff\xfe\x00{", "UTF-8"),
    ],
    ids=["truncated", "empty", "latin1", "garbage"],
)
def test_malformed_body_gets_400(client: TestClient, body: bytes, needle: str) -> None:
    resp = client.post("/v1/reviews", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "malformed_body"
    assert needle in resp.json()["error"]["message"]


@pytest.mark.parametrize("body", [b"5", b'"a review"', b"null", b'{"reviews": "nope"}'])
def test_wrong_shape_gets_422(client: TestClient, body: bytes) -> None:
    resp = client.post("/v1/reviews", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text


def test_10_mb_review_gets_413_by_content_length(client: TestClient, ingest_settings: IngestSettings) -> None:
    r = review(text="x" * 10_000_000)
    resp = client.post("/v1/reviews", content=orjson.dumps(r), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert _reviews_of(ingest_settings, r["user_id"]) == []


def test_oversized_chunked_body_gets_413_while_streaming(client: TestClient) -> None:
    def chunks():  # no Content-Length: the server must count while reading
        yield b'{"reviews": ['
        for _ in range(10):
            yield b'"' + b"x" * 1_000_000 + b'",'
        yield b"1]}"

    resp = client.post("/v1/reviews", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert "exceeds the limit" in resp.json()["error"]["message"]


def test_too_many_records_gets_413(ingest_settings: IngestSettings) -> None:
    app = create_app(ingest_settings.model_copy(update={"INGEST_MAX_BATCH": 3, "RELAY_ENABLED": False}))
    with TestClient(app) as c:
        resp = c.post("/v1/reviews", json={"reviews": [review() for _ in range(4)]})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "batch_too_large"


def test_nul_characters_are_stored_safely(client: TestClient, ingest_settings: IngestSettings) -> None:
    r = review(text="soft\u0000 wig")
    assert client.post("/v1/reviews", json=r).status_code == 202
    assert _reviews_of(ingest_settings, r["user_id"])[0].text == "soft wig"
    resp = client.post("/v1/reviews", json=review(user_id="A\u0000B"))
    assert resp.status_code == 422


def test_auth_when_keys_configured(ingest_settings: IngestSettings) -> None:
    app = create_app(
        ingest_settings.model_copy(update={"API_KEYS": ["k-one", "k-two"], "RELAY_ENABLED": False})
    )
    with TestClient(app) as c:
        assert c.post("/v1/reviews", json=review()).status_code == 401
        assert (
            c.post("/v1/reviews", json=review(), headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        assert c.post("/v1/items", json=item(), headers={"Authorization": "Basic k-one"}).status_code == 401
        ok = c.post("/v1/reviews", json=review(), headers={"Authorization": "Bearer k-two"})
        assert ok.status_code == 202
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_auth_off_by_default(client: TestClient) -> None:
    assert client.post("/v1/items", json=item()).status_code == 202


def test_health_readiness_metrics(client: TestClient) -> None:
    client.app.state.broker_watch.probe()  # the watcher's probe, awaited here instead of racing it
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    # The broker's state is a detail of health (a cached probe), not a condition of readiness.
    assert health["details"]["broker"]["ok"] is True
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["ok"] is True
    assert "broker" not in ready.json()["checks"]
    assert ready.json()["checks"]["relay"]["ok"] is True
    assert 'recsys_broker_up{service="ingest"} 1.0' in client.get("/metrics").text
    client.post("/v1/reviews", json=review())
    assert 'recsys_ingest_records_total{kind="reviews",outcome="accepted"}' in client.get("/metrics").text


def test_broker_down_keeps_ingest_ready_and_accepting(ingest_settings: IngestSettings) -> None:
    """Readiness means "can accept writes" (the database): a broker outage is not a write outage."""
    app = create_app(
        ingest_settings.model_copy(
            update={"KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RELAY_ENABLED": False}
        )
    )
    with TestClient(app) as c:
        app.state.broker_watch.probe()  # the watcher's first probe, awaited here instead of racing it
        resp = c.get("/readyz")
        assert resp.status_code == 200, resp.text
        assert resp.json()["checks"]["database"]["ok"] is True
        health = c.get("/healthz")
        assert health.status_code == 200
        assert health.json()["details"]["broker"]["ok"] is False
        assert 'recsys_broker_up{service="ingest"} 0.0' in c.get("/metrics").text
        r = review()
        assert c.post("/v1/reviews", json=r).status_code == 202
    assert _outbox_count(ingest_settings, r["user_id"]) == 1  # held in the outbox for the relay


def test_openapi_documents_the_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/v1/reviews"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "rating" in schema["oneOf"][0]["properties"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def only_relay(client: TestClient) -> Iterator[None]:
    """Pause the session app's relay: it shares the database and would publish our rows elsewhere."""
    relay = client.app.state.relay
    relay.stop()
    try:
        yield
    finally:
        relay.start()


@pytest.mark.slow
@pytest.mark.usefixtures("only_relay")
def test_broker_outage_accepts_then_delivers_all_once(ingest_settings: IngestSettings, tmp_path: Path) -> None:
    port = free_port()
    own = ingest_settings.model_copy(
        update={"KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "RELAY_MAX_BACKOFF_S": 1.0}
    )
    broker = start_broker("127.0.0.1", port, log_path=tmp_path / "tansu-1.log")
    users = [user_id() for _ in range(20)]
    try:
        with TestClient(create_app(own)) as client:
            warm = review(user_id=users[0])
            assert client.post("/v1/reviews", json=warm).status_code == 202
            deadline = time.monotonic() + 30
            while pending_outbox(own, {users[0]}) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert pending_outbox(own, {users[0]}) == 0, "relay never published with the broker up"

            _stop(broker)
            for u in users[1:]:
                resp = client.post(
                    "/v1/reviews",
                    json={"reviews": [review(user_id=u), review(user_id=u, timestamp=1_700_000_000_001)]},
                )
                assert resp.status_code == 202
                assert resp.json()["accepted"] == 2
            time.sleep(2)  # the relay is failing and backing off meanwhile
            assert pending_outbox(own, set(users[1:])) == 38

            broker = start_broker("127.0.0.1", port, log_path=tmp_path / "tansu-2.log")
            deadline = time.monotonic() + 60
            while pending_outbox(own, set(users[1:])) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert pending_outbox(own, set(users[1:])) == 0, "outbox not drained after the broker came back"
            assert client.app.state.relay.last_error is None

        keys = {u.encode() for u in users[1:]}
        # Everything is published (outbox drained): read the whole topic for a while, duplicates included.
        records = read_topic(own, REVIEWS, until=lambda f: False, match=lambda r: r.key in keys, timeout_s=8)
        ids = Counter(value(r)["event_id"] for r in records)
        assert len(ids) == 38, f"events lost: {len(ids)} of 38 ({len(records)} records)"
        assert max(ids.values()) == 1, "events doubled"
    finally:
        _stop(broker)


@pytest.mark.slow
@pytest.mark.usefixtures("only_relay")
def test_broker_stopped_while_reviews_stream_in_loses_none(ingest_settings: IngestSettings, tmp_path: Path) -> None:
    """Reviews keep arriving while the broker stops and comes back: every accepted review is delivered
    after the restart (0 lost); duplicates are counted, bounded by one relay round, and reported."""
    import threading

    port = free_port()
    own = ingest_settings.model_copy(update={"KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "RELAY_MAX_BACKOFF_S": 1.0})
    broker = start_broker("127.0.0.1", port, log_path=tmp_path / "tansu-1.log")
    users = [user_id() for _ in range(60)]
    accepted: list[str] = []
    try:
        with TestClient(create_app(own)) as client:

            def stream() -> None:
                for u in users:
                    body = {"reviews": [review(user_id=u, timestamp=1_700_000_000_000 + i) for i in range(5)]}
                    resp = client.post("/v1/reviews", json=body)
                    if resp.status_code == 202:
                        accepted.extend([u] * resp.json()["accepted"])
                    time.sleep(0.1)

            writer = threading.Thread(target=stream)
            writer.start()
            time.sleep(1.5)
            broker.kill()  # mid-stream, and abruptly: a crash, not a graceful shutdown
            broker.wait(timeout=10)
            time.sleep(3.0)
            restarted_at = utcnow()
            broker = start_broker("127.0.0.1", port, log_path=tmp_path / "tansu-2.log")
            writer.join(timeout=60)
            assert len(accepted) == 300  # every POST was accepted, broker or not
            deadline = time.monotonic() + 90
            while pending_outbox(own, set(users)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert pending_outbox(own, set(users)) == 0, "outbox not drained after the broker came back"
        keys = {u.encode() for u in users}
        records = read_topic(own, REVIEWS, until=lambda f: False, match=lambda r: r.key in keys, timeout_s=8)
        ids = Counter(value(r)["event_id"] for r in records)
        # The dev broker keeps its topics in memory: what it acked before the stop is gone with it (that
        # is the broker's loss, not ours). Every event published after the restart must be on it.
        with session_scope(own.database_url) as s:
            after = int(s.scalar(select(func.count()).select_from(OutboxEvent).where(
                OutboxEvent.key.in_(users), OutboxEvent.published_at >= restarted_at
            )) or 0)
        lost = after - len(ids)
        duplicates = sum(n - 1 for n in ids.values())
        print(f"\nbroker outage while streaming: 300 accepted, {after} published after the restart, "
              f"{len(ids)} of them on the new broker, {lost} lost, {duplicates} duplicates")
        assert lost == 0, f"{lost} events lost"
        assert duplicates <= 100, f"{duplicates} duplicates: more than one relay round"
    finally:
        _stop(broker)
