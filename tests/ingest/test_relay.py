"""The outbox relay: broker outages lose nothing and double nothing; replicas split the work."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from services.ingest.service import ingest
from shared.broker import free_port, start_broker
from shared.db import session_scope
from shared.events import REVIEWS
from shared.models import OutboxEvent
from shared.outbox import OutboxRelay
from tests.ingest.util import read_topic, review, user_id, value


def _pending(settings: IngestSettings, keys: set[str]) -> int:
    with session_scope(settings.database_url) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None), OutboxEvent.key.in_(keys))
            )
            or 0
        )


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
def test_broker_outage_accepts_then_delivers_all_once(ingest_settings: IngestSettings, tmp_path) -> None:
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
            while _pending(own, {users[0]}) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _pending(own, {users[0]}) == 0, "relay never published with the broker up"

            _stop(broker)
            for u in users[1:]:
                resp = client.post(
                    "/v1/reviews",
                    json={"reviews": [review(user_id=u), review(user_id=u, timestamp=1_700_000_000_001)]},
                )
                assert resp.status_code == 202
                assert resp.json()["accepted"] == 2
            time.sleep(2)  # the relay is failing and backing off meanwhile
            assert _pending(own, set(users[1:])) == 38

            broker = start_broker("127.0.0.1", port, log_path=tmp_path / "tansu-2.log")
            deadline = time.monotonic() + 60
            while _pending(own, set(users[1:])) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _pending(own, set(users[1:])) == 0, "outbox not drained after the broker came back"
            assert client.app.state.relay.last_error is None

        keys = {u.encode() for u in users[1:]}
        # Everything is published (outbox drained): read the whole topic for a while, duplicates included.
        records = read_topic(own, REVIEWS, until=lambda f: False, match=lambda r: r.key in keys, timeout_s=8)
        ids = Counter(value(r)["event_id"] for r in records)
        assert len(ids) == 38, f"events lost: {len(ids)} of 38 ({len(records)} records)"
        assert max(ids.values()) == 1, "events doubled"
    finally:
        _stop(broker)


def test_concurrent_relays_publish_each_event_once(ingest_settings: IngestSettings) -> None:
    users = [user_id() for _ in range(300)]
    result = ingest(
        database_url=ingest_settings.database_url, kind="reviews", records=[review(user_id=u) for u in users]
    )
    assert result.changed == 300
    relays = [
        OutboxRelay(settings=ingest_settings, name=f"r{i}", batch=25)
        for i in range(3)
    ]
    counts = [0, 0, 0]

    def work(i: int) -> None:
        counts[i] = relays[i].drain(timeout_s=60)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in relays:
        r.stop()
    # The session app's relay (same database) may hold a round of its own: wait for it too.
    deadline = time.monotonic() + 30
    while _pending(ingest_settings, set(users)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _pending(ingest_settings, set(users)) == 0
    keys = {u.encode() for u in users}
    records = read_topic(
        ingest_settings, REVIEWS, until=lambda f: len(f) >= 300, match=lambda r: r.key in keys
    )
    assert len(records) == 300
    assert len({value(r)["event_id"] for r in records}) == 300
    # The session relay (the app fixture) may have taken some rounds too; the three did most of it.
    assert sum(counts) <= 300
