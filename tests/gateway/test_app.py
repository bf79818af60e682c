"""The gateway against real dependencies: PostgreSQL, the explainer app over HTTP; retriever/ALS down."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.explainer.app import create_app as create_explainer
from services.explainer.config import ExplainerSettings
from services.explainer.llm import LLMReasoner
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.schemas import RecommendationsResponse
from shared.config import CommonSettings
from shared.llm import CallableLLM
from shared.reasons import near_duplicate_share
from tests.utils.gateway import Seeded
from tests.utils.metrics import sample
from tests.utils.servers import dead_url, serving, start_app
from tests.utils.settings import service_settings


@pytest.fixture(scope="module")
def gw(gateway_settings: GatewaySettings) -> Any:
    with TestClient(create_app(gateway_settings)) as c:
        yield c


def _recs(c: TestClient, user: str, **params: Any) -> Any:
    return c.get(f"/v1/users/{user}/recommendations", params=params)


@pytest.mark.parametrize(
    "params", [{"k": 0}, {"k": 51}, {"k": "five"}, {"strategy": "bogus"}, {"reasons": "gpt"}]
)
def test_user_mistakes_are_422(gw: TestClient, seeded: Seeded, params: dict[str, Any]) -> None:
    r = _recs(gw, seeded.warm_user, **params)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


def test_unknown_user_gets_a_cold_start_answer(gw: TestClient) -> None:
    r = _recs(gw, "NEVER-SEEN-USER-0001", k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cold_start"] is True and body["user_id"] == "NEVER-SEEN-USER-0001"
    assert len(body["items"]) == 5
    assert all(i["parent_asin"] and i["reason"] and i["source"] == "popular" for i in body["items"])
    assert near_duplicate_share([i["reason"] for i in body["items"]]) == 0.0


@pytest.mark.parametrize("strategy", ["hybrid", "als", "llm_only", "popular"])
def test_every_strategy_answers_a_warm_user_when_retriever_and_als_are_down(
    gw: TestClient, seeded: Seeded, strategy: str
) -> None:
    body = _recs(gw, seeded.warm_user, k=5, strategy=strategy).json()
    assert body["strategy"] == strategy and body["cold_start"] is False
    assert body["degraded"] is True  # the retriever (and ALS) are down: the answer says so
    asins = [i["parent_asin"] for i in body["items"]]
    assert len(asins) == 5 and len(set(asins)) == 5
    assert not set(asins) & set(seeded.history)  # already-reviewed items are never recommended
    assert all(i["reason"] for i in body["items"])
    assert near_duplicate_share([i["reason"] for i in body["items"]]) == 0.0
    assert any(n.startswith("retriever:") for n in body["notes"])


def test_warm_user_reasons_come_from_the_explainer_and_use_the_profile(
    gw: TestClient, seeded: Seeded
) -> None:
    body = _recs(gw, seeded.warm_user, k=5).json()
    assert not any(n.startswith("explainer:") for n in body["notes"])
    reasons = " ".join(i["reason"].lower() for i in body["items"])
    assert "soft cotton" in reasons or "wigs" in reasons or "combs" in reasons or "bonnet" in reasons


@pytest.mark.parametrize("strategy", ["hybrid", "als", "llm_only", "popular"])
def test_answers_match_the_documented_response_model(gw: TestClient, seeded: Seeded, strategy: str) -> None:
    """The endpoint serializes its dict directly (no response validation): the shape is checked here."""
    for user in (seeded.warm_user, "NEVER-SEEN-USER-0002"):
        r = _recs(gw, user, k=3, strategy=strategy)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.headers["x-cache"] in ("hit", "miss", "bypass")
        parsed = RecommendationsResponse.model_validate(r.json(), strict=True)
        assert len(parsed.items) == 3 and set(r.json()) == set(RecommendationsResponse.model_fields)
        assert all(set(i) == set(type(parsed.items[0]).model_fields) for i in r.json()["items"])
    schema = gw.get("/openapi.json").json()["components"]["schemas"]
    assert "RecommendationsResponse" in schema and "RecommendedItem" in schema


def test_k_is_honoured(gw: TestClient, seeded: Seeded) -> None:
    for k in (1, 3, 12):
        assert len(_recs(gw, seeded.warm_user, k=k).json()["items"]) == k


def test_profile_endpoint(gw: TestClient, seeded: Seeded) -> None:
    r = gw.get(f"/v1/users/{seeded.warm_user}/profile")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["version"] == 2 and body["liked_features"] == ["soft cotton"]
    assert "embedding" not in body
    cold = gw.get(f"/v1/users/{seeded.cold_profile_user}/profile")
    assert cold.status_code == 200 and cold.json()["status"] == "cold_start"
    missing = gw.get("/v1/users/NOBODY-HERE/profile")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "profile_not_found"


def test_user_with_a_cold_start_profile_is_cold(gw: TestClient, seeded: Seeded) -> None:
    body = _recs(gw, seeded.cold_profile_user, k=5).json()
    assert body["cold_start"] is True  # the profiler judged one review too little: a cold-start answer
    assert seeded.items[20] not in [i["parent_asin"] for i in body["items"]]


def test_readyz_reports_every_dependency(gw: TestClient) -> None:
    r = gw.get("/readyz")
    assert r.status_code == 200  # the DB is up; the others are optional and reported
    checks = r.json()["checks"]
    assert checks["db"]["ok"] is True
    assert checks["explainer"]["reachable"] is True and checks["explainer"]["ready"] is True
    assert checks["retriever"]["reachable"] is False and checks["als"]["reachable"] is False


def test_metrics_have_latency_per_strategy_and_dependency(gw: TestClient, seeded: Seeded) -> None:
    _recs(gw, seeded.warm_user, k=2, strategy="popular")
    text = gw.get("/metrics").text
    assert 'recsys_gateway_recommendation_seconds_count{degraded="true",strategy="popular"}' in text
    assert (
        'recsys_gateway_dependency_seconds_count{call="explanations",dependency="explainer",outcome="ok"}'
        in text
    )


def test_explainer_down_gives_local_template_reasons_and_degraded(
    gateway_settings: GatewaySettings, seeded: Seeded
) -> None:
    settings = gateway_settings.model_copy(update={"EXPLAINER_URL": dead_url()})
    with TestClient(create_app(settings)) as c:
        t0 = time.monotonic()
        body = _recs(c, seeded.warm_user, k=5).json()
        elapsed = time.monotonic() - t0
    assert body["degraded"] is True and "explainer:unreachable" in body["notes"]
    assert all(i["reason"] and i["reason_source"] == "template" for i in body["items"])
    assert near_duplicate_share([i["reason"] for i in body["items"]]) == 0.0
    assert elapsed < 5.0


def test_slow_explainer_times_out_into_template_reasons(
    gateway_settings: GatewaySettings, seeded: Seeded, settings: CommonSettings
) -> None:
    """A real explainer whose LLM takes 3 s per call; the gateway waits at most its timeout."""

    def slow(prompt: str, **_: Any) -> str:
        time.sleep(3.0)
        return "A soft cotton pick."

    reasoner = LLMReasoner(
        CallableLLM(slow, name="slow"), batch=5, max_new_tokens=32, max_chars=160, max_ungrounded=2
    )
    ex_settings = service_settings(
        ExplainerSettings, settings, EXPLAINER_LLM_BUDGET_S=30.0, EXPLAINER_DB_CACHE=False
    )
    with serving(create_explainer(ex_settings, reasoner=reasoner)) as slow_explainer:
        gw_settings = gateway_settings.model_copy(
            update={"EXPLAINER_URL": slow_explainer.url, "GATEWAY_EXPLAINER_TIMEOUT_S": 0.8}
        )
        with TestClient(create_app(gw_settings)) as c:
            t0 = time.monotonic()
            body = _recs(c, seeded.warm_user, k=5, reasons="llm").json()
            elapsed = time.monotonic() - t0
    assert body["degraded"] is True and "explainer:timeout" in body["notes"]
    assert all(i["reason"] for i in body["items"]) and len(body["items"]) == 5
    assert elapsed < 3.0


def test_stopping_the_explainer_mid_session_degrades_then_recovers(
    gateway_settings: GatewaySettings, seeded: Seeded, settings: CommonSettings
) -> None:
    ex_settings = service_settings(ExplainerSettings, settings, EXPLAINER_BACKEND="template")
    running = start_app(create_explainer(ex_settings, reasoner=None))
    port = int(running.url.rsplit(":", 1)[1])
    gw_settings = gateway_settings.model_copy(update={"EXPLAINER_URL": running.url})
    with TestClient(create_app(gw_settings)) as c:
        assert (
            "explainer:unreachable" not in _recs(c, seeded.warm_user, k=3, strategy="popular").json()["notes"]
        )
        running.stop()
        t0 = time.monotonic()
        body = _recs(c, seeded.warm_user, k=3, strategy="popular").json()
        assert time.monotonic() - t0 < gw_settings.GATEWAY_EXPLAINER_TIMEOUT_S + 2
        assert (
            body["degraded"] is True and len(body["items"]) == 3 and all(i["reason"] for i in body["items"])
        )
        again = start_app(create_explainer(ex_settings, reasoner=None), port=port)
        try:
            notes = _recs(c, seeded.warm_user, k=3, strategy="popular").json()["notes"]
            assert not any(n.startswith("explainer:") for n in notes)
        finally:
            again.stop()


def test_template_reasons_are_rendered_in_the_gateway_without_the_explainer(
    gateway_settings: GatewaySettings, seeded: Seeded
) -> None:
    settings = gateway_settings.model_copy(update={"EXPLAINER_URL": dead_url()})
    with TestClient(create_app(settings)) as c:
        body = _recs(c, seeded.warm_user, k=5, strategy="popular", reasons="template").json()
    assert not any(n.startswith("explainer:") for n in body["notes"])
    assert all(i["reason"] and i["reason_source"] == "template" for i in body["items"])


def _cache_count(c: TestClient, result: str) -> float:
    return sample(c.get("/metrics").text, "recsys_gateway_answer_cache_total", result=result)


def test_answer_cache_reuses_until_the_user_changes_and_never_keeps_degraded_answers(
    gateway_settings: GatewaySettings, seeded: Seeded, settings: CommonSettings, pg_url: str, tmp_path: Any
) -> None:
    from services.retriever.app import create_app as create_retriever
    from services.retriever.config import RetrieverSettings
    from shared.db import session_scope
    from shared.models import Review

    user = seeded.warm_user
    # A real retriever (its index built from the seeded catalog): only non-degraded answers are cached.
    retriever_settings = service_settings(
        RetrieverSettings, settings, HOME=tmp_path, RETRIEVER_PROFILE_LISTENER=False
    )
    with (
        serving(create_retriever(retriever_settings), ready_path="/readyz") as retriever,
        TestClient(
            create_app(
                gateway_settings.model_copy(update={"GATEWAY_CACHE_TTL_S": 60.0, "RETRIEVER_URL": retriever.url})
            )
        ) as c,
    ):
        q: dict[str, Any] = {"k": 3, "strategy": "popular", "reasons": "template"}
        first = _recs(c, user, **q).json()
        assert first["degraded"] is False, first["notes"]
        hits = _cache_count(c, "hit")
        second = _recs(c, user, **q)
        assert second.json() == first and second.headers["X-Cache"] == "hit"
        assert _cache_count(c, "hit") == hits + 1
        # Cache-Control: no-cache computes afresh without looking.
        misses = _cache_count(c, "miss")
        fresh = c.get(f"/v1/users/{user}/recommendations", params=q, headers={"Cache-Control": "no-cache"})
        assert fresh.headers["X-Cache"] == "bypass"
        # Server-Timing says where a computed answer's time went; a cached one made no calls
        steps = dict(part.split(";dur=") for part in fresh.headers["Server-Timing"].split(", "))
        assert {"db-user", "retriever-candidates", "total"} <= set(steps), steps
        assert 0 < float(steps["retriever-candidates"]) <= float(steps["total"])
        assert "retriever-candidates" not in second.headers["Server-Timing"]
        assert (_cache_count(c, "hit"), _cache_count(c, "miss")) == (hits + 1, misses)
        # A new review changes the user's stamp: the next answer is computed, and excludes that item.
        reviewed = first["items"][0]["parent_asin"]
        with session_scope(pg_url) as s:
            s.add(Review(user_id=user, parent_asin=reviewed, timestamp=1_800_000_000_000, rating=4.0,
                         title="t", text="new review"))
        try:
            after = _recs(c, user, **q).json()
            assert _cache_count(c, "miss") == misses + 1
            assert reviewed not in {i["parent_asin"] for i in after["items"]}
        finally:
            with session_scope(pg_url) as s:
                s.query(Review).filter_by(user_id=user, timestamp=1_800_000_000_000).delete()
    # Degraded answers (retriever and explainer down) are computed every time.
    down = gateway_settings.model_copy(update={"GATEWAY_CACHE_TTL_S": 60.0, "EXPLAINER_URL": dead_url()})
    with TestClient(create_app(down)) as c:
        q = {"k": 3, "strategy": "popular", "reasons": "auto"}
        assert _recs(c, user, **q).json()["degraded"] is True
        hits = _cache_count(c, "hit")
        assert _recs(c, user, **q).json()["degraded"] is True
        assert _cache_count(c, "hit") == hits


def test_personal_data_needs_a_read_key_when_keys_are_configured(
    gateway_settings: GatewaySettings, seeded: Seeded
) -> None:
    """Profiles and recommendations are personal data: with read keys set, no key or a wrong one is a 401
    with the documented error body; a read key or the admin key reads; probes stay open."""
    locked = gateway_settings.model_copy(update={"READ_KEYS": ["reader-1"], "ADMIN_KEY": "admin-1"})
    with TestClient(create_app(locked)) as c:
        for path in (f"/v1/users/{seeded.warm_user}/profile", f"/v1/users/{seeded.warm_user}/recommendations"):
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic reader-1"},
                            {"Authorization": "Bearer r\u00e9ader".encode("latin-1")}):
                r = c.get(path, params={"strategy": "popular"}, headers=headers)
                assert r.status_code == 401, (path, headers, r.text)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["WWW-Authenticate"] == "Bearer"
            for key in ("reader-1", "admin-1"):
                ok = c.get(path, params={"strategy": "popular"}, headers={"Authorization": f"Bearer {key}"})
                assert ok.status_code == 200, ok.text
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code in (200, 503)  # a probe: never a 401
