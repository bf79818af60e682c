"""The retriever's HTTP API on a running stack: response shapes, validation, lookups, metrics."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


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
    from services.retriever.schemas import CandidatesResponse

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
