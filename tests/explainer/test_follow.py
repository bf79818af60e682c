"""The serving explainer keeps the reasons and re-ranks the worker writes in memory by following their
tables (PostgreSQL), so a request reads no database while memory holds them all."""
from __future__ import annotations

import uuid

from services.explainer.store import ReasonCache, RerankStore


def test_followed_reasons_are_served_from_memory_and_new_rows_arrive_on_the_next_poll(pg_url: str) -> None:
    worker = ReasonCache(database_url=pg_url, lru_size=100)  # what the LLM worker writes through
    user = f"follow-{uuid.uuid4().hex[:8]}"
    worker.put_many(user_id=user, profile_version=2, model_name="m", reasons=[("A1", "reason one")])
    serving = ReasonCache(database_url=pg_url, lru_size=100_000)
    ask = {"user_id": user, "profile_version": 2, "model_name": "m", "asins": ["A1", "A2"]}
    assert serving.in_memory(**ask) == ({}, True)  # not following: the database must be read
    follower = serving.follow(stale_s=60)
    follower.poll()
    assert follower.complete
    # memory holds every stored reason: A2 has none, and nothing needs reading
    assert serving.in_memory(**ask) == ({"A1": "reason one"}, False)
    worker.put_many(user_id=user, profile_version=2, model_name="m", reasons=[("A2", "reason two")])
    assert serving.in_memory(**ask) == ({"A1": "reason one"}, False)  # written after the last poll
    assert follower.poll() >= 1
    assert serving.in_memory(**ask) == ({"A1": "reason one", "A2": "reason two"}, False)


def test_a_table_larger_than_memory_or_a_stale_follower_reads_the_database(pg_url: str) -> None:
    worker = ReasonCache(database_url=pg_url, lru_size=100)
    user = f"follow-{uuid.uuid4().hex[:8]}"
    worker.put_many(user_id=user, profile_version=1, model_name="m",
                    reasons=[(f"B{i}", f"reason {i}") for i in range(5)])
    small = ReasonCache(database_url=pg_url, lru_size=3)
    follower = small.follow(stale_s=60)
    follower.poll()
    assert follower.partial and not follower.complete
    found, read = small.in_memory(user_id=user, profile_version=1, model_name="m", asins=["B0", "B4", "Z"])
    assert read is True and found == {"B4": "reason 4"}  # the newest rows that fit, the rest from the database
    stale = ReasonCache(database_url=pg_url, lru_size=100_000)
    f2 = stale.follow(stale_s=0.0)
    f2.poll()
    assert not f2.complete  # not polled within stale_s: requests read the database again
    assert stale.in_memory(user_id=user, profile_version=1, model_name="m", asins=["Z"]) == ({}, True)


def test_followed_re_ranks_are_served_from_memory(pg_url: str) -> None:
    worker = RerankStore(database_url=pg_url, lru_size=10)
    user = f"follow-{uuid.uuid4().hex[:8]}"
    key = (user, 3, "cat-1", "m")
    serving = RerankStore(database_url=pg_url, lru_size=100_000)
    follower = serving.follow(stale_s=60)
    follower.poll()
    assert serving.in_memory(key) == (None, False)  # complete: not stored, no read
    worker.put(key, items=[{"parent_asin": "C1", "rank": 1}], method="label_logits", parsed=1)
    follower.poll()
    assert serving.in_memory(key) == ({"items": [{"parent_asin": "C1", "rank": 1}], "method": "label_logits",
                                       "parsed": 1}, False)
