"""hybrid with the ranking core in the running retriever: fitted in the background from the reviews in
PostgreSQL, refitted when the data changes, served with each item's channel, described on /v1/ranker."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.service import ingest
from services.retriever.config import RetrieverSettings
from shared.config import CommonSettings
from tests.retriever.conftest import service_of, wait_for
from tests.utils.settings import service_settings
from tools.synth import generate

pytestmark = pytest.mark.slow
CHANNELS = {"coreview", "transitions", "transitions_wide", "lexical", "reviews", "embedding", "popular"}


@pytest.fixture(scope="module")
def data() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    return generate(users=60, items=40, seed=5)


@pytest.fixture(scope="module")
def rsettings(settings: CommonSettings, own_db: str, tmp_path_factory: pytest.TempPathFactory) -> RetrieverSettings:
    return service_settings(
        RetrieverSettings, settings, DATABASE_URL=own_db, HOME=tmp_path_factory.mktemp("retriever-home"),
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:6]}.", RETRIEVER_POLL_S=0.2, RETRIEVER_CATALOG_REFRESH_S=0.5,
        RETRIEVER_PROFILE_LISTENER=False, RETRIEVER_MODELS_LISTENER=False, RETRIEVER_RANKER=True,
        RETRIEVER_RANKER_REFIT_S=0.5)


def busiest(reviews: list[dict[str, Any]]) -> tuple[str, set[str]]:
    by_user: dict[str, set[str]] = {}
    for r in reviews:
        by_user.setdefault(r["user_id"], set()).add(r["parent_asin"])
    return max(by_user.items(), key=lambda kv: (len(kv[1]), kv[0]))


def test_hybrid_is_ranked_by_the_core_once_it_is_fitted(client: TestClient, data: Any) -> None:
    svc = service_of(client)
    assert svc.ranker is not None
    wait_for(lambda: svc.ranker is not None and svc.ranker.core is not None, timeout_s=120)
    user, seen = busiest(data[0])
    body = client.post("/v1/candidates", json={"user_id": user, "k": 5, "strategy": "hybrid"}).json()
    assert body["ranker_version"] == svc.ranker.core.version
    assert len(body["items"]) == 5 and not seen & {i["parent_asin"] for i in body["items"]}
    assert all(i["source"] == "hybrid" and i["channel"] in CHANNELS for i in body["items"]), body
    assert all(i["average_rating"] is None or i["average_rating"] >= 3.3 for i in body["items"])
    # the other strategies are not the core's
    pop = client.post("/v1/candidates", json={"user_id": user, "k": 5, "strategy": "popular"}).json()
    assert pop["ranker_version"] is None and all(i["channel"] is None for i in pop["items"])


def test_ranker_endpoint_and_readiness_describe_the_live_core(client: TestClient) -> None:
    svc = service_of(client)
    wait_for(lambda: svc.ranker is not None and svc.ranker.core is not None, timeout_s=120)
    body = client.get("/v1/ranker").json()
    assert body["enabled"] and body["ready"] and body["validation_users"] > 0
    assert body["model"]["kind"] in {"blend", "lambdarank"} and "coreview" in body["sources"]
    assert body["promotion"]["promoted"] in {True, False}
    ready = client.get("/readyz").json()["checks"]["ranker"]
    assert ready["ready"] and ready["version"] == body["version"]


def test_refits_only_when_the_data_changed(client: TestClient, rsettings: RetrieverSettings, data: Any) -> None:
    svc = service_of(client)
    wait_for(lambda: svc.ranker is not None and svc.ranker.core is not None, timeout_s=120)
    assert svc.ranker is not None
    snap = svc.current()[0]
    assert svc.ranker.refit(snap) is False  # nothing changed since the background fit
    before = svc.ranker.core.version if svc.ranker.core else None
    review = {**data[0][0], "user_id": "ranker-newcomer"}
    assert ingest(database_url=rsettings.database_url, kind="reviews", records=[review]).accepted == 1
    assert svc.ranker.refit(snap) is True
    assert svc.ranker.core is not None and svc.ranker.core.version != before
    # the new core was judged against the live one on the new validation queries
    promotion = svc.ranker.core.report["promotion"]
    assert promotion["live_version"] == before and promotion["live_ndcg"] is not None


def test_refit_is_an_operator_action_behind_the_admin_key(client: TestClient, rsettings: RetrieverSettings) -> None:
    svc = service_of(client)
    wait_for(lambda: svc.ranker is not None and svc.ranker.core is not None, timeout_s=120)
    assert client.post("/v1/ranker/refit").status_code == 200  # no admin key configured: open
    app = client.app
    app.state.settings = rsettings.model_copy(update={"ADMIN_KEY": "ops-key"})  # type: ignore[attr-defined]
    try:
        refused = client.post("/v1/ranker/refit")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert client.post("/v1/ranker/refit", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.post("/v1/ranker/refit", headers={"Authorization": "Bearer ops-key"})
        assert ok.status_code == 200 and ok.json()["enabled"] is True
        assert client.get("/v1/ranker").status_code == 200  # reading the description stays open
    finally:
        app.state.settings = rsettings  # type: ignore[attr-defined]


def test_hybrid_answers_are_computed_ahead_and_served_until_their_inputs_change(
        client: TestClient, rsettings: RetrieverSettings, data: Any) -> None:
    svc = service_of(client)
    wait_for(lambda: svc.ranker is not None and svc.ranker.core is not None, timeout_s=120)
    assert svc.precomputer is not None and svc.memo is not None
    user, seen = busiest(data[0])
    k = rsettings.RETRIEVER_PRECOMPUTE_K
    ask = {"user_id": user, "k": k, "strategy": "hybrid", "exclude": sorted(seen)}
    assert svc.ranker is not None
    svc.ranker.refit(svc.current()[0])  # waits for a refit the earlier tests' data started, or fits it now
    for _ in range(3):  # a background refit swapping the core in between makes the answer another one
        done = svc.precomputer.done
        svc.precomputer.ask(user)  # what a ready profile event does
        wait_for(lambda before=done: svc.precomputer is not None and svc.precomputer.done > before
                 and svc.precomputer.waiting() == 0, timeout_s=60)
        served = client.post("/v1/candidates", json=ask).json()
        if served["precomputed"]:
            break
    computed = client.post("/v1/candidates", json=ask | {"fresh": True}).json()
    assert served["precomputed"] is True and computed["precomputed"] is False
    assert served["items"] == computed["items"] and served["ranker_version"] == computed["ranker_version"]
    # another input is another answer: one more excluded item is computed, not served
    first = served["items"][0]["parent_asin"]
    other = client.post("/v1/candidates", json=ask | {"exclude": sorted(seen | {first})}).json()
    assert other["precomputed"] is False and first not in {i["parent_asin"] for i in other["items"]}
    # a new review of the user changes the history: the stored answer is not served for it
    review = {**data[0][0], "user_id": user, "parent_asin": first, "timestamp": 2_000_000_000_000}
    assert ingest(database_url=rsettings.database_url, kind="reviews", records=[review]).accepted == 1
    after = client.post("/v1/candidates", json=ask).json()
    assert after["precomputed"] is False and first not in {i["parent_asin"] for i in after["items"]}
    # a new core: the users the memo holds are ranked again ahead of their next request
    before = svc.ranker.core.version if svc.ranker and svc.ranker.core else None
    done = svc.precomputer.done
    assert svc.ranker is not None and svc.ranker.refit(svc.current()[0]) is True
    wait_for(lambda: svc.precomputer is not None and svc.precomputer.done > done, timeout_s=30)
    again = client.post("/v1/candidates", json=ask).json()
    assert again["ranker_version"] != before and again["precomputed"] is True
    info = client.get("/v1/ranker").json()["precomputed"]
    assert info["enabled"] and info["answers"] >= 1 and info["k"] == k
