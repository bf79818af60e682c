"""Answers computed ahead of requests and refreshed behind them (services/gateway/precompute.py): the
cache's fresh / stale / miss states, the precomputer's order and its yielding to requests (pure logic),
and the whole path on a real broker, PostgreSQL, retriever and explainer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.precompute import Job, Precomputer
from services.gateway.service import AnswerCache
from shared import events
from shared.config import CommonSettings
from shared.db import session_scope
from shared.events import ModelEvent, ProfileEvent
from shared.kafka import ensure_topics, make_producer
from shared.models import Explanation
from tests.utils.gateway import Seeded
from tests.utils.metrics import sample
from tests.utils.servers import serving
from tests.utils.settings import service_settings


def test_an_answer_is_fresh_then_stale_then_gone_and_never_served_for_another_stamp() -> None:
    cache = AnswerCache(ttl_s=0.2, stale_s=0.4, size=10)
    key = ("u1", "hybrid", 5, "auto")
    cache.put(key, "stamp-1", {"n": 1})
    assert cache.get(key, "stamp-1") == ({"n": 1}, "hit")
    assert cache.get(key, "stamp-2") == (None, "miss")  # the user changed: never served
    time.sleep(0.25)
    assert cache.get(key, "stamp-1") == ({"n": 1}, "stale")
    time.sleep(0.4)
    assert cache.get(key, "stamp-1") == (None, "miss")
    # a promoted model makes every answer stale at once; one put after it is fresh again
    cache.put(key, "stamp-1", {"n": 2})
    cache.mark_stale()
    assert cache.get(key, "stamp-1") == ({"n": 2}, "stale")
    cache.put(key, "stamp-1", {"n": 3})
    assert cache.get(key, "stamp-1") == ({"n": 3}, "hit")
    # a shorter TTL (a pending llm_only answer) is stale sooner; no stale window: a miss after the TTL
    cache.put(key, "stamp-1", {"n": 4}, ttl_s=0.05)
    time.sleep(0.1)
    assert cache.get(key, "stamp-1")[1] == "stale"
    strict = AnswerCache(ttl_s=0.05, stale_s=0, size=10)
    strict.put(key, "s", {"n": 5})
    time.sleep(0.1)
    assert strict.get(key, "s") == (None, "miss") and strict.keys() == []


def test_the_precomputer_runs_each_job_once_in_order_after_the_requests_in_flight() -> None:
    async def scenario() -> None:
        done: list[tuple[Job, bool, float]] = []
        in_flight = {"n": 1}

        async def compute(job: Job, ahead: bool) -> dict[str, Any]:
            done.append((job, ahead, time.monotonic()))
            return {"degraded": False}

        pre = Precomputer(compute=compute, busy=lambda: in_flight["n"] > 0, wait_s=5.0, max_queued=3).start()
        a, b, c, d = (Job(u, "hybrid", 5, "auto") for u in "abcd")
        started = time.monotonic()
        pre.ask([a, b, a], trigger="profile", ahead=True)
        pre.ask([b], trigger="stale", ahead=False)  # a request's refresh of a queued job: a request's now
        pre.ask([c, d], trigger="profile", ahead=True)  # d: over max_queued, dropped
        await asyncio.sleep(0.2)
        assert done == []  # a request is in flight: the jobs wait for it
        in_flight["n"] = 0
        for _ in range(100):
            if len(done) == 3:
                break
            await asyncio.sleep(0.01)
        await pre.stop()
        assert [(j.user_id, ahead) for j, ahead, _ in done] == [("a", True), ("b", False), ("c", True)]
        assert done[0][2] - started >= 0.2

        # under constant load a job waits at most wait_s
        in_flight["n"] = 1
        late: list[float] = []

        async def record(job: Job, ahead: bool) -> dict[str, Any]:
            late.append(time.monotonic())
            return {}

        busy_pre = Precomputer(compute=record, busy=lambda: True, wait_s=0.1, max_queued=10).start()
        t0 = time.monotonic()
        busy_pre.ask([a], trigger="profile", ahead=True)
        for _ in range(100):
            if late:
                break
            await asyncio.sleep(0.01)
        await busy_pre.stop()
        assert late and 0.09 <= late[0] - t0 < 1.0

    asyncio.run(scenario())


def _recs(c: TestClient, user: str, **params: Any) -> Any:
    return c.get(f"/v1/users/{user}/recommendations", params=params)


def _precomputed(c: TestClient, trigger: str) -> float:
    return sample(c.get("/metrics").text, "recsys_gateway_precompute_total", trigger=trigger, result="done")


def _model_jobs(c: TestClient) -> float:
    """Jobs a promoted model started, whatever their result."""
    return sample(c.get("/metrics").text, "recsys_gateway_precompute_total", trigger="model")


def test_a_written_profile_is_answered_before_it_is_asked_and_stale_answers_refresh_behind_requests(
    gateway_settings: GatewaySettings, seeded: Seeded, settings: CommonSettings, tmp_path: Any, unique: str
) -> None:
    from services.retriever.app import create_app as create_retriever
    from services.retriever.config import RetrieverSettings

    user = seeded.warm_user
    prefix = f"pre{unique}."  # this test's own topics: no other test's events reach this gateway
    retriever_settings = service_settings(
        RetrieverSettings, settings, HOME=tmp_path, RETRIEVER_PROFILE_LISTENER=False
    )
    gw = gateway_settings.model_copy(update={
        "GATEWAY_CACHE_TTL_S": 1.0, "GATEWAY_CACHE_STALE_S": 600.0, "GATEWAY_PRECOMPUTE": True,
        "GATEWAY_PRECOMPUTE_STRATEGIES": ["popular", "als"], "GATEWAY_FOLLOW_S": 0.2, "GATEWAY_PRECOMPUTE_K": 3,
        "GATEWAY_REASONS": "template",
        "TOPIC_PREFIX": prefix})
    ensure_topics(gw, [events.PROFILES, events.MODELS], partitions=1)
    producer = make_producer(gw)
    with (
        serving(create_retriever(retriever_settings), ready_path="/readyz") as retriever,
        TestClient(create_app(gw.model_copy(update={"RETRIEVER_URL": retriever.url}))) as c,
    ):
        try:
            # the listener starts from the latest offset: the event is sent until it has been seen
            profile = ProfileEvent(user_id=user, version=1, status="ready").model_dump(mode="json")
            profile_before = _precomputed(c, "profile")
            deadline = time.monotonic() + 60
            while _precomputed(c, "profile") <= profile_before and time.monotonic() < deadline:
                producer.send(gw.topic(events.PROFILES), key=user, value=profile)
                producer.flush()
                time.sleep(0.5)
            assert _precomputed(c, "profile") > profile_before
            ready = c.get("/readyz").json()["checks"]["precompute"]
            assert ready["done"] >= 1 and ready["waiting"] >= 0
            # the first request reads the answer computed ahead: no retriever call in its Server-Timing
            first = _recs(c, user, k=3, strategy="popular")
            assert first.headers["X-Cache"] == "hit", first.headers
            assert "retriever-candidates" not in first.headers["Server-Timing"]
            assert first.json()["degraded"] is False and len(first.json()["items"]) == 3
            # the same answer computed by a request agrees with the one computed ahead
            fresh = c.get(f"/v1/users/{user}/recommendations", params={"k": 3, "strategy": "popular"},
                          headers={"Cache-Control": "no-cache"}).json()
            assert [i["parent_asin"] for i in fresh["items"]] == [i["parent_asin"] for i in first.json()["items"]]
            # after its TTL it is served at once and recomputed behind the request
            time.sleep(1.1)
            stale_before = _precomputed(c, "stale")
            stale = _recs(c, user, k=3, strategy="popular")
            assert stale.headers["X-Cache"] == "stale" and stale.json() == first.json()
            deadline = time.monotonic() + 20
            while _precomputed(c, "stale") < stale_before + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _recs(c, user, k=3, strategy="popular").headers["X-Cache"] == "hit"
            # the LLM worker writes this user's reasons: their cached answers are recomputed soon after
            # (another user's write recomputes nothing of theirs)
            llm_before = _precomputed(c, "llm")
            shown = first.json()["items"][0]["parent_asin"]
            with session_scope(settings.database_url) as s:
                for who in (f"{user}-other", user):
                    s.add(Explanation(user_id=who, profile_version=1, parent_asin=shown,
                                      model_name=f"follow-{unique}", reason="A pick for you.", source="llm"))
            try:
                deadline = time.monotonic() + 20
                while _precomputed(c, "llm") < llm_before + 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.5)
                assert _precomputed(c, "llm") == llm_before + 1  # one cached answer: this user's popular k=3
            finally:
                with session_scope(settings.database_url) as s:
                    s.query(Explanation).filter_by(model_name=f"follow-{unique}").delete()
            # a promoted model: every answer is stale at once and recomputed when next asked; only the
            # remembered users' missing defaults are computed at once (here als: the ALS service is down, so
            # that answer is degraded and was never stored)
            model_before, done_before = _model_jobs(c), _precomputed(c, "model")
            promoted = ModelEvent(model="als", kind="explicit", version=99, promoted=True).model_dump(mode="json")
            deadline = time.monotonic() + 60
            while _model_jobs(c) <= model_before and time.monotonic() < deadline:
                producer.send(gw.topic(events.MODELS), key="explicit", value=promoted)
                producer.flush()
                time.sleep(0.5)
            assert _model_jobs(c) > model_before
            # the popular answer was there: not recomputed up front
            assert _precomputed(c, "model") == done_before
            assert _recs(c, user, k=3, strategy="popular").headers["X-Cache"] == "stale"
            # Cache-Control: no-cache does not read the stored answer, and what it computes replaces it
            c.app.state.recommender.cache.mark_stale()
            bypass = c.get(f"/v1/users/{user}/recommendations", params={"k": 3, "strategy": "popular"},
                           headers={"Cache-Control": "no-cache"})
            assert bypass.headers["X-Cache"] == "bypass"
            assert _recs(c, user, k=3, strategy="popular").headers["X-Cache"] == "hit"
        finally:
            producer.close()


def test_an_answer_the_retriever_gave_as_for_a_cold_user_is_kept_only_for_users_without_reviews(
    gateway_settings: GatewaySettings, seeded: Seeded
) -> None:
    """While its index is still loading, the retriever answers a user whose items it does not know yet
    as a cold one (popular items): for a user with reviews that answer is not kept, so the next request
    asks again; for a user without any it is the real answer and is kept."""
    from fastapi import FastAPI

    fake = FastAPI()
    asked: list[str | None] = []

    @fake.post("/v1/candidates")
    async def candidates(body: dict[str, Any]) -> dict[str, Any]:
        asked.append(body.get("user_id"))
        items = [{"parent_asin": f"{seeded.prefix}ITEM{i}", "title": f"Item {i}", "score": 1.0 / (i + 1)}
                 for i in range(3)]
        return {"strategy": body["strategy"], "cold_start": True, "index_version": "loading", "items": items}

    gw = gateway_settings.model_copy(update={"GATEWAY_CACHE_TTL_S": 60.0, "GATEWAY_REASONS": "template"})
    with serving(fake) as retriever, TestClient(create_app(gw.model_copy(update={"RETRIEVER_URL": retriever.url}))) \
            as c:
        for user, kept in ((seeded.warm_user, False), (f"{seeded.prefix}NOBODY", True)):
            first = _recs(c, user, k=3, strategy="popular")
            assert first.status_code == 200 and first.json()["degraded"] is False, first.text
            second = _recs(c, user, k=3, strategy="popular")
            assert second.headers["X-Cache"] == ("hit" if kept else "miss"), (user, second.headers)
    assert asked.count(seeded.warm_user) == 2
