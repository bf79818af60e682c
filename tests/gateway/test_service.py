"""The gateway's request to the retriever: which of the reviews it has just read it hands over."""

from __future__ import annotations

from typing import Any, cast

from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.service import Recommender
from services.gateway.store import UserRecord


def _retriever_body(n_read: int, **settings: Any) -> dict[str, Any]:
    """The body for a user of whom the gateway read ``n_read`` reviews (newest first)."""
    recommender = Recommender(
        settings=GatewaySettings(ENVIRONMENT="test", **settings), clients=cast(ServiceClients, None)
    )
    user = UserRecord(
        user_id="U",
        profile_version=3,
        n_reviews=n_read,
        reviews=[(f"A{i}", 5.0, 1_000 - i) for i in range(n_read)],
    )
    return recommender._retriever_body("U", user, strategy="hybrid", k=5, exclude=set())


def test_the_retriever_gets_the_RETRIEVER_HISTORY_MAX_most_recent_reviews() -> None:
    body = _retriever_body(300)  # defaults: 500 read, RETRIEVER_HISTORY_MAX=200 sent
    assert body["profile_version"] == 3
    assert len(body["history"]) == 200
    assert body["history"][0] == {"parent_asin": "A0", "rating": 5.0, "timestamp": 1_000}
    assert len(_retriever_body(300, RETRIEVER_HISTORY_MAX=50)["history"]) == 50
    assert len(_retriever_body(30)["history"]) == 30  # fewer than the maximum: all of them


def test_GATEWAY_SEND_HISTORY_false_lets_the_retriever_read_the_history_itself() -> None:
    body = _retriever_body(30, GATEWAY_SEND_HISTORY=False)
    assert "history" not in body and body["profile_version"] == 3


def test_history_is_sent_only_when_the_gateway_read_enough_of_it() -> None:
    # Reading 100 while the retriever uses 200: a user with 100+ reviews may have more than were read.
    assert "history" not in _retriever_body(100, GATEWAY_HISTORY_LIMIT=100)
    assert len(_retriever_body(99, GATEWAY_HISTORY_LIMIT=100)["history"]) == 99


def test_item_facts_are_kept_for_the_answer_ttl_and_evicted_by_size(monkeypatch: Any) -> None:
    """The als path's item facts: reused within GATEWAY_CACHE_TTL_S (the staleness its answers already
    have), read again after it, the least recently written dropped beyond the size; TTL 0 keeps none."""
    import services.gateway.service as svc
    from services.gateway.service import FactsCache

    now = [100.0]
    monkeypatch.setattr(svc.time, "monotonic", lambda: now[0])
    cache = FactsCache(ttl_s=30.0, size=2)
    cache.put_many({"A": {"title": "a"}, "B": {"title": "b"}})
    assert cache.get_many(["A", "B", "C"]) == ({"A": {"title": "a"}, "B": {"title": "b"}}, ["C"])
    cache.put_many({"C": {"title": "c"}})  # over the size: A, written first, goes
    assert cache.get_many(["A", "C"]) == ({"C": {"title": "c"}}, ["A"])
    now[0] += 31
    assert cache.get_many(["B", "C"]) == ({}, ["B", "C"])
    off = FactsCache(ttl_s=0.0, size=10)
    off.put_many({"A": {"title": "a"}})
    assert off.get_many(["A"]) == ({}, ["A"])
