"""The retriever's lifecycle end to end on real PostgreSQL, a real broker and the real model.

Items go in through the ingest service (rows + outbox in one transaction) and its outbox relay,
the indexer consumes items.v1, and the HTTP process bootstraps, picks up the indexer's snapshots,
restarts without re-embedding and listens on profiles.v1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.ingest.service import ingest
from services.retriever.config import RetrieverSettings
from services.retriever.indexer import Indexer
from services.retriever.service import RetrieverService
from shared.db import session_scope
from shared.embeddings import Encoder
from shared.models import Profile
from shared.outbox import OutboxRelay
from tests.retriever.conftest import CountingEncoder, service_of, wait_for

pytestmark = pytest.mark.slow


def test_bootstrap_embeds_the_catalog_once_and_serves_it(
    client: TestClient, counting: CountingEncoder, loaded: Any, encoder: Encoder
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["index"]["size"] == loaded["items"] and checks["model"]["ok"] and checks["database"]["ok"]
    assert counting.texts == 2 * loaded["items"]  # item text + title per item
    # a second process (the indexer) starting on the same snapshot embeds nothing
    other = CountingEncoder(encoder)
    idx = Indexer(service_of(client).settings, encoder=other)
    assert len(idx.bootstrap()) == loaded["items"] and other.texts == 0


def test_item_posted_to_ingest_becomes_retrievable_within_seconds(
    client: TestClient, indexer: Indexer, relay: OutboxRelay, rsettings: RetrieverSettings
) -> None:
    item = {
        "parent_asin": "B0STOVE0001",
        "title": "Titanium backpacking camping stove",
        "main_category": "Outdoors",
        "features": ["folds to pocket size", "boils water in 3 minutes"],
        "average_rating": 4.6,
        "rating_number": 120,
    }
    started = time.monotonic()
    assert ingest(database_url=rsettings.database_url, kind="items", records=[item]).accepted == 1
    wait_for(lambda: relay.publish_pending() == 0 and True, timeout_s=30)  # outbox drained to the broker

    def found() -> bool:
        r = client.post("/v1/candidates", json={"profile_text": "a light stove for camping trips", "k": 3})
        return r.status_code == 200 and r.json()["items"][0]["parent_asin"] == "B0STOVE0001"

    wait_for(found, timeout_s=60)
    elapsed = time.monotonic() - started
    assert elapsed < 60
    got = client.get("/v1/items/B0STOVE0001").json()
    assert got["indexed"] and got["title"].startswith("Titanium") and got["average_rating"] == 4.6


def test_replacing_an_items_text_changes_its_vector(
    client: TestClient, indexer: Indexer, relay: OutboxRelay, rsettings: RetrieverSettings
) -> None:
    svc = service_of(client)
    wait_for(lambda: svc.current()[0].vector("B0STOVE0001") is not None, timeout_s=60)
    before = svc.current()[0].vector("B0STOVE0001").copy()  # type: ignore[union-attr]
    changed = {
        "parent_asin": "B0STOVE0001",
        "title": "Organic cotton crib sheet for babies",
        "main_category": "Baby",
        "features": ["breathable", "fits standard crib mattress"],
        "average_rating": 4.6,
        "rating_number": 120,
    }
    assert ingest(database_url=rsettings.database_url, kind="items", records=[changed]).accepted == 1
    relay.publish_pending()

    def replaced() -> bool:
        v = svc.current()[0].vector("B0STOVE0001")
        return v is not None and float(v @ before) < 0.7

    wait_for(replaced, timeout_s=60)
    r = client.post("/v1/candidates", json={"profile_text": "sheets for my baby's crib", "k": 1}).json()
    assert r["items"][0]["parent_asin"] == "B0STOVE0001"
    wait_for(lambda: client.get("/v1/items/B0STOVE0001").json()["title"].startswith("Organic"), timeout_s=30)


def test_replayed_events_change_nothing(indexer: Indexer) -> None:
    snap = indexer.snapshot
    again = indexer.apply(dict(snap.hashes))
    assert again is snap and indexer.store.latest_version() == snap.version


def test_restart_restores_the_snapshot_without_re_embedding(
    client: TestClient, rsettings: RetrieverSettings, encoder: Encoder, indexer: Indexer
) -> None:
    latest = indexer.snapshot
    fresh = CountingEncoder(encoder)
    svc = RetrieverService(rsettings, encoder=fresh)
    try:
        svc.start()
        assert svc.wait_ready(60), svc.last_error
        snap, _ = svc.current()
        assert fresh.texts == 0
        assert snap.fingerprint == latest.fingerprint and len(snap) == len(latest)
        assert np.array_equal(snap.vector("B0STOVE0001"), latest.vector("B0STOVE0001"))  # type: ignore[arg-type]
    finally:
        svc.stop()


def test_home_holds_a_manifest(rsettings: RetrieverSettings, client: TestClient) -> None:
    assert (Path(rsettings.HOME) / "index" / "manifest.json").exists()


def test_profile_events_warm_the_vector_cache(client: TestClient, rsettings: RetrieverSettings) -> None:
    svc = service_of(client)
    with session_scope(rsettings.database_url) as s:
        s.merge(Profile(user_id="event-user", version=7, status="ready", summary="Enjoys vegan lipstick."))

    class Rec:  # the shape ConsumerLoop hands to handlers
        partition, offset = 0, 0
        value = b'{"type":"profile.updated","user_id":"event-user","version":7,"status":"ready"}'

    svc.handle_profile_events([Rec()])
    assert svc.users.profiles.get(("event-user", 7)) is not None


def test_profiles_published_to_the_broker_reach_a_running_retriever(
    rsettings: RetrieverSettings, loaded: Any, counting: CountingEncoder
) -> None:
    """The real listener (a ConsumerLoop on profiles.v1, its own group, starting at the latest offset):
    a profile event published to the broker puts that profile's vector in the running service's cache,
    so the user's first request needs no embedding."""
    from shared.events import PROFILES, ProfileEvent
    from shared.kafka import ensure_topics, make_producer

    settings = rsettings.model_copy(update={"RETRIEVER_PROFILE_LISTENER": True})
    ensure_topics(settings, [PROFILES])
    vec = counting.encode(["Loves vegan matte lipstick and long lasting colour."])[0]
    svc = RetrieverService(settings, encoder=counting)
    svc.start()
    producer = make_producer(settings)
    try:
        assert svc.wait_ready(120), svc.last_error
        event = ProfileEvent(user_id="broker-user", version=4, status="ready", embedding=vec.tolist())
        # The listener joins its group asynchronously and starts at the latest offset: publish until
        # an event lands after it joined (each later event is the same fact; the cache put is idempotent).
        deadline = time.monotonic() + 60
        while svc.users.profiles.get(("broker-user", 4)) is None and time.monotonic() < deadline:
            producer.send(settings.topic(PROFILES), key="broker-user", value=event.model_dump(mode="json"))
            producer.flush()
            time.sleep(1.0)
        cached = svc.users.profiles.get(("broker-user", 4))
        assert cached is not None, "no profiles.v1 event reached the listener within 60 s"
        np.testing.assert_allclose(cached, vec, rtol=1e-6)
    finally:
        producer.close()
        svc.stop()


class WakeRecorder:
    """Stands in for the LiveRanker: never due (no fit), counts the wakes models.v1 gives it."""

    def __init__(self) -> None:
        self.woken = 0

    def due(self) -> bool:
        return False

    def wake(self) -> None:
        self.woken += 1


def test_models_published_to_the_broker_wake_the_ranker(rsettings: RetrieverSettings, loaded: Any,
                                                         counting: CountingEncoder) -> None:
    """The real models.v1 listener (its own group, from the latest offset): a promoted model version
    wakes the ranking core, which then looks for that version's neighbour lists."""
    from shared.events import MODELS, ModelEvent
    from shared.kafka import ensure_topics, make_producer

    settings = rsettings.model_copy(update={"RETRIEVER_RANKER": True, "RETRIEVER_MODELS_LISTENER": True})
    ensure_topics(settings, [settings.topic(MODELS)])
    svc = RetrieverService(settings, encoder=counting)
    recorder = WakeRecorder()
    svc.ranker = recorder  # type: ignore[assignment]
    svc.start()
    producer = make_producer(settings)
    try:
        assert svc.wait_ready(120), svc.last_error
        event = ModelEvent(kind="explicit", version=41, promoted=True).model_dump(mode="json")
        deadline = time.monotonic() + 60
        while not recorder.woken and time.monotonic() < deadline:  # until the listener has joined
            producer.send(settings.topic(MODELS), key="explicit", value=event)
            producer.flush()
            time.sleep(1.0)
        assert recorder.woken, "no models.v1 event reached the listener within 60 s"
    finally:
        producer.close()
        svc.stop()
