"""The retriever end to end on real PostgreSQL, a real broker and the real model.

Items go in through the ingest service (rows + outbox in one transaction) and its outbox relay,
the indexer consumes items.v1, and the HTTP app picks up its snapshots.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.ingest.config import IngestSettings
from services.ingest.service import ingest
from services.retriever.app import create_app
from services.retriever.config import RetrieverSettings
from services.retriever.indexer import Indexer, build_loop
from services.retriever.service import RetrieverService
from shared.config import CommonSettings
from shared.db import session_scope
from shared.embeddings import Encoder, to_bytes
from shared.models import Profile
from shared.outbox import OutboxRelay
from tests.retriever.conftest import CountingEncoder
from tests.utils.databases import temporary_database
from tools.synth import generate

pytestmark = pytest.mark.slow


def wait_for(predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.2) -> float:
    """Seconds until ``predicate()`` is truthy; fails the test on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


@pytest.fixture(scope="module")
def own_db() -> Iterator[str]:
    """A database of this module's own: bootstrap embeds exactly the items these tests wrote."""
    with temporary_database("recsys_retriever") as url:
        yield url


@pytest.fixture(scope="module")
def data() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    return generate(users=40, items=32, seed=11)


@pytest.fixture(scope="module")
def rsettings(
    settings: CommonSettings, own_db: str, tmp_path_factory: pytest.TempPathFactory
) -> RetrieverSettings:
    return RetrieverSettings(
        **(
            settings.model_dump()
            | {
                "DATABASE_URL": own_db,
                "HOME": tmp_path_factory.mktemp("retriever-home"),
                "TOPIC_PREFIX": f"t{uuid.uuid4().hex[:6]}.",
                "RETRIEVER_POLL_S": 0.2,
                "RETRIEVER_CATALOG_REFRESH_S": 0.5,
                "RETRIEVER_PROFILE_LISTENER": False,
                "RETRIEVER_INDEXER_GROUP": f"retriever-indexer-{uuid.uuid4().hex[:6]}",
            }
        )
    )


@pytest.fixture(scope="module")
def relay(rsettings: RetrieverSettings) -> Iterator[OutboxRelay]:
    r = OutboxRelay(settings=IngestSettings(**rsettings.model_dump()))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def loaded(rsettings: RetrieverSettings, data: Any) -> dict[str, Any]:
    reviews, meta, _ = data
    assert ingest(database_url=rsettings.database_url, kind="items", records=meta).accepted == len(meta)
    assert ingest(database_url=rsettings.database_url, kind="reviews", records=reviews).accepted == len(
        reviews
    )
    return {"items": len(meta)}


@pytest.fixture(scope="module")
def counting(encoder: Encoder) -> CountingEncoder:
    return CountingEncoder(encoder)


@pytest.fixture(scope="module")
def client(rsettings: RetrieverSettings, loaded: Any, counting: CountingEncoder) -> Iterator[TestClient]:
    svc = RetrieverService(rsettings, encoder=counting)
    with TestClient(create_app(rsettings, service=svc)) as c:
        assert svc.wait_ready(120), svc.last_error
        c.svc = svc  # type: ignore[attr-defined]
        yield c


@pytest.fixture(scope="module")
def indexer(rsettings: RetrieverSettings, client: TestClient, encoder: Encoder) -> Iterator[Indexer]:
    idx = Indexer(rsettings, encoder=CountingEncoder(encoder))
    idx.bootstrap()
    loop = build_loop(rsettings, idx)
    t = threading.Thread(target=loop.run, name="test-indexer", daemon=True)
    t.start()
    yield idx
    loop.stop()
    t.join(timeout=20)


def _svc(client: TestClient) -> RetrieverService:
    return client.svc  # type: ignore[attr-defined,no-any-return]


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
    idx = Indexer(_svc(client).settings, encoder=other)
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
    svc = _svc(client)
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


def test_history_from_the_database_personalizes(client: TestClient, data: Any) -> None:
    reviews, _, truth = data
    by_user: dict[str, list[dict[str, Any]]] = {}
    for r in reviews:
        by_user.setdefault(r["user_id"], []).append(r)
    user, revs = max(by_user.items(), key=lambda kv: len(kv[1]))
    body = client.post("/v1/candidates", json={"user_id": user, "k": 5, "strategy": "hybrid"}).json()
    assert body["user_id"] == user and not body["cold_start"] and body["strategy"] == "hybrid"
    seen = {r["parent_asin"] for r in revs}
    assert all(i["parent_asin"] not in seen for i in body["items"])
    assert all(i["source"] == "hybrid" for i in body["items"])
    assert all(i["average_rating"] is None or i["average_rating"] >= 3.3 for i in body["items"])
    excluded = body["items"][0]["parent_asin"]
    body2 = client.post("/v1/candidates", json={"user_id": user, "k": 5, "exclude": [excluded]}).json()
    assert excluded not in {i["parent_asin"] for i in body2["items"]}


@pytest.mark.parametrize("strategy", ["hybrid", "llm_only", "popular"])
def test_candidates_match_the_documented_response_model(
    client: TestClient, data: Any, strategy: str
) -> None:
    """The endpoint serializes its dict directly (no response validation): the shape is checked here."""
    from services.retriever.app import CandidatesResponse

    user = data[0][0]["user_id"]
    for body in ({"user_id": user, "k": 5, "strategy": strategy}, {"user_id": "nobody-x", "strategy": strategy}):
        r = client.post("/v1/candidates", json=body)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        parsed = CandidatesResponse.model_validate(r.json(), strict=True)
        assert parsed.items and set(r.json()) == set(CandidatesResponse.model_fields)
        assert all(set(i) == set(type(parsed.items[0]).model_fields) for i in r.json()["items"])


def test_cold_start_users_get_diverse_popular_items(client: TestClient) -> None:
    lists = []
    for i in range(8):
        body = client.post("/v1/candidates", json={"user_id": f"nobody-{i}", "k": 5}).json()
        assert body["cold_start"] and len(body["items"]) == 5
        assert {it["source"] for it in body["items"]} == {"popular"}
        lists.append(tuple(it["parent_asin"] for it in body["items"]))
    assert len(set(lists)) >= 3


def test_stored_profile_vector_is_used(
    client: TestClient, rsettings: RetrieverSettings, encoder: Encoder, data: Any
) -> None:
    _, _, truth = data
    fam_name, fam = next(iter(truth["families"].items()))
    vec = encoder.encode([f"Loves {fam['noun']}: {', '.join(fam['likes'])}"])[0]
    with session_scope(rsettings.database_url) as s:
        s.merge(
            Profile(user_id="profiled-user", version=3, status="ready", summary="", embedding=to_bytes(vec))
        )
    body = client.post("/v1/candidates", json={"user_id": "profiled-user", "k": 5}).json()
    assert not body["cold_start"]
    hits = sum(truth["items"].get(i["parent_asin"]) == fam_name for i in body["items"])
    assert hits >= 3, body["items"]
    llm = client.post("/v1/candidates", json={"user_id": "profiled-user", "strategy": "llm_only"}).json()
    assert llm["strategy"] == "llm_only" and len(llm["items"]) <= 50
    assert all(i["average_rating"] >= 4.0 and i["rating_number"] >= 5 for i in llm["items"])


def test_profile_events_warm_the_vector_cache(client: TestClient, rsettings: RetrieverSettings) -> None:
    svc = _svc(client)
    with session_scope(rsettings.database_url) as s:
        s.merge(Profile(user_id="event-user", version=7, status="ready", summary="Enjoys vegan lipstick."))

    class Rec:  # the shape ConsumerLoop hands to handlers
        partition, offset = 0, 0
        value = b'{"type":"profile.updated","user_id":"event-user","version":7,"status":"ready"}'

    svc.handle_profile_events([Rec()])
    assert svc.profiles.get(("event-user", 7)) is not None


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
        while svc.profiles.get(("broker-user", 4)) is None and time.monotonic() < deadline:
            producer.send(settings.topic(PROFILES), key="broker-user", value=event.model_dump(mode="json"))
            producer.flush()
            time.sleep(1.0)
        cached = svc.profiles.get(("broker-user", 4))
        assert cached is not None, "no profiles.v1 event reached the listener within 60 s"
        np.testing.assert_allclose(cached, vec, rtol=1e-6)
    finally:
        producer.close()
        svc.stop()


def test_similar_items_and_lookups(client: TestClient, data: Any) -> None:
    _, meta, truth = data
    asin = meta[0]["parent_asin"]
    body = client.get(f"/v1/items/{asin}/similar", params={"k": 4}).json()
    assert body["parent_asin"] == asin and len(body["items"]) == 4
    assert asin not in {i["parent_asin"] for i in body["items"]}
    assert truth["items"][body["items"][0]["parent_asin"]] == truth["items"][asin]
    missing = client.get("/v1/items/NOPE0000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "item_not_found"
    assert client.get("/v1/items/NOPE0000/similar").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"k": 0},
        {"k": 10_000},
        {"strategy": "bogus"},
        {"user_id": ""},
        {"exclude": "B0X"},
        {"als_candidates": [{"parent_asin": "B0X", "score": "high"}]},
        {"profile_vector": [1.0, 2.0]},
    ],
)
def test_bad_requests_are_precise_4xx(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/v1/candidates", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in {"validation_error", "invalid_profile_vector"}


def test_metrics_expose_query_latency(client: TestClient) -> None:
    client.post("/v1/candidates", json={"profile_text": "lipstick", "k": 2})
    metrics = client.get("/metrics").text
    assert "recsys_retriever_query_seconds_bucket" in metrics and "recsys_retriever_index_items" in metrics


def test_home_holds_a_manifest(rsettings: RetrieverSettings, client: TestClient) -> None:
    assert (Path(rsettings.HOME) / "index" / "manifest.json").exists()


def test_hybrid_blends_the_live_als_top_n_read_from_the_database(
    client: TestClient, data: Any, rsettings: RetrieverSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without als_candidates, hybrid reads the user's stored top-N of the live ALS model itself."""
    from sqlalchemy import delete

    from shared.models import AlsItemIndex, AlsModel, AlsTopN

    svc: RetrieverService = client.svc  # type: ignore[attr-defined]
    monkeypatch.setattr(svc.als_live, "ttl_s", 0.0)  # see a model written a moment ago
    reviews = data[0]
    user = max({r["user_id"] for r in reviews}, key=lambda u: sum(r["user_id"] == u for r in reviews))
    no_als = {"user_id": user, "k": 32, "strategy": "hybrid", "als_candidates": []}
    before = client.post("/v1/candidates", json=no_als).json()
    assert before["als_version"] is None
    order = [i["parent_asin"] for i in before["items"]]
    boosted, other = order[-1], order[-2]  # ALS loves the item the vectors rank last
    with session_scope(rsettings.database_url) as s:
        model = AlsModel(kind="explicit", status="live")
        s.add(model)
        s.flush()
        version = model.version
        s.add(AlsItemIndex(model_version=version, item_ids="\n".join([other, boosted]).encode()))
        s.add(
            AlsTopN(
                model_version=version,
                user_id=user,
                items=np.asarray([1, 0], dtype="<i4").tobytes(),
                scores=np.asarray([5.0, 1.0], dtype="<f4").tobytes(),
            )
        )
    import services.retriever.service as service_mod

    reads: list[int] = []
    real_topn = service_mod.user_topn
    monkeypatch.setattr(
        service_mod, "user_topn", lambda *a, **kw: reads.append(kw["version"]) or real_topn(*a, **kw)
    )
    try:
        blended = client.post("/v1/candidates", json={"user_id": user, "k": 32, "strategy": "hybrid"}).json()
        assert blended["als_version"] == version
        ranked = [i["parent_asin"] for i in blended["items"]]
        assert ranked.index(boosted) < order.index(boosted)
        # a version's rows never change: the second request is served from memory
        again = client.post("/v1/candidates", json={"user_id": user, "k": 32, "strategy": "hybrid"}).json()
        assert again["items"] == blended["items"] and reads == [version]
        # a user the model does not know, and an explicit empty list, get no blend
        assert client.post("/v1/candidates", json={"user_id": "nobody-als", "strategy": "hybrid"}).json()[
            "als_version"
        ] is None
        assert client.post("/v1/candidates", json=no_als).json()["als_version"] is None
        assert 'recsys_retriever_als_blend_total{result="blended"}' in client.get("/metrics").text
    finally:
        with session_scope(rsettings.database_url) as s:
            s.execute(delete(AlsTopN).where(AlsTopN.model_version == version))
            s.execute(delete(AlsItemIndex).where(AlsItemIndex.model_version == version))
            s.execute(delete(AlsModel).where(AlsModel.version == version))


def test_history_and_profile_version_from_the_caller_spare_the_reads(
    client: TestClient, data: Any, rsettings: RetrieverSettings, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway sends the history and profile version it just read: same answer, fewer reads; a
    new profile version is read (and cached) again."""
    import services.retriever.service as service_mod

    reads = {"history": 0, "profile": 0}

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            reads[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(service_mod, "load_history", counting("history", service_mod.load_history))
    monkeypatch.setattr(service_mod, "load_profile", counting("profile", service_mod.load_profile))
    reviews = data[0]
    user = max({r["user_id"] for r in reviews}, key=lambda u: sum(r["user_id"] == u for r in reviews))
    history = [
        {"parent_asin": r["parent_asin"], "rating": r["rating"], "timestamp": r["timestamp"]}
        for r in reviews
        if r["user_id"] == user
    ]
    base = {"user_id": user, "k": 8, "strategy": "hybrid", "als_candidates": []}
    from_db = client.post("/v1/candidates", json=base).json()
    assert reads == {"history": 1, "profile": 1}
    given = {**base, "history": history, "profile_version": 0}
    for _ in range(2):
        body = client.post("/v1/candidates", json=given).json()
        assert [i["parent_asin"] for i in body["items"]] == [i["parent_asin"] for i in from_db["items"]]
    assert reads == {"history": 1, "profile": 2}  # history never read; profile once for version 0

    vec = encoder.encode(["Loves bright red lipstick and glossy nail polish"])[0]
    with session_scope(rsettings.database_url) as s:
        s.merge(Profile(user_id=user, version=1, status="ready", summary="", embedding=to_bytes(vec)))
    try:
        profiled = client.post("/v1/candidates", json={**given, "profile_version": 1}).json()
        assert reads["profile"] == 3 and reads["history"] == 1
        assert profiled["items"] != body["items"]  # the new profile steers the ranking
    finally:
        with session_scope(rsettings.database_url) as s:
            s.query(Profile).filter_by(user_id=user).delete()
