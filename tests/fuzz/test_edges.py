"""Regressions of what fuzzing the real apps found, each now a precise 4xx at the edge.

- every 404 (unknown path) and 405 (wrong method) answered Starlette's ``{"detail": ...}`` instead of
  the documented error body;
- an id with a NUL character (PostgreSQL text cannot hold one) reached the database and was a 500 in
  the gateway (profile), ALS (recommendations) and retriever (candidates by user_id);
- an ALS model version above PostgreSQL's INTEGER range was a 500 (NumericValueOutOfRange).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.fuzz.conftest import Stack

SERVICES = ["ingest", "retriever", "explainer", "als", "gateway"]


def _error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("service", SERVICES)
def test_unknown_path_and_wrong_method_get_the_documented_error_body(
    stack: Stack, http: requests.Session, service: str
) -> None:
    base = stack.urls[service]
    _error(http.get(base + "/v1/no-such-thing"), 404, "not_found")
    wrong = http.request("TRACE", base + "/healthz")
    _error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET"  # the handler keeps the headers of the HTTP error


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("gateway", "/v1/users/U%00X/recommendations"),
        ("gateway", "/v1/users/U%00X/profile"),
        ("als", "/v1/users/U%00X/recommendations"),
        ("retriever", "/v1/items/B%00X"),
        ("retriever", "/v1/items/B%00X/similar"),
    ],
)
def test_ids_with_nul_in_the_path_are_422(stack: Stack, http: requests.Session, service: str, path: str) -> None:
    error = _error(http.get(stack.urls[service] + path), 422, "validation_error")
    assert error["details"][0]["loc"][0] == "path"


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "U\x00X"},
        {"exclude": ["B\x00X"]},
        {"als_candidates": [{"parent_asin": "B\x00X", "score": 1.0}]},
        {"user_id": "U1", "history": [{"parent_asin": "B\x00X", "rating": 4.0, "timestamp": 1}]},
    ],
)
def test_retriever_ids_with_nul_in_the_body_are_422(stack: Stack, http: requests.Session, body: dict[str, Any]) -> None:
    _error(http.post(stack.urls["retriever"] + "/v1/candidates", json=body), 422, "validation_error")


def test_ids_without_nul_still_work(stack: Stack, http: requests.Session) -> None:
    user = stack.users[0]
    r = http.post(stack.urls["retriever"] + "/v1/candidates", json={"user_id": user, "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    assert http.get(stack.urls["gateway"] + f"/v1/users/{user}/profile").json()["status"] == "ready"
    assert http.get(stack.urls["als"] + f"/v1/users/{user}/recommendations", params={"k": 2}).json()["items"]


def test_als_model_versions_beyond_the_integer_column_are_422(stack: Stack, http: requests.Session) -> None:
    base = stack.urls["als"]
    _error(http.get(base + f"/v1/models/{2**32 + 1}"), 422, "validation_error")
    _error(http.get(base + "/v1/models/0"), 422, "validation_error")
    _error(http.get(base + f"/v1/models/{2**31 - 1}"), 404, "model_not_found")
    live = http.get(base + "/v1/models/live").json()
    assert http.get(base + f"/v1/models/{live['version']}").json()["status"] == "live"
