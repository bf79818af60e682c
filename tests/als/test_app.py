"""The HTTP service on the real database: recommendations of the live model, versions, train."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from services.als import store
from services.als.app import create_app
from services.als.config import AlsSettings


@pytest.fixture(scope="module")
def api_settings(als_settings: AlsSettings) -> AlsSettings:
    return als_settings.model_copy(update={"ADMIN_KEY": "admin-secret", "ALS_REFIT_ON_ALL": False})


@pytest.fixture(scope="module")
def client(api_settings: AlsSettings, seeded_db: pd.DataFrame, spark: Any) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        yield c


def _wait_for_run(settings: AlsSettings, run_id: str, timeout_s: float = 600) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = [r for r in store.recent_versions(settings.database_url, limit=50) if r.run_id == run_id]
        if rows and rows[0].status != "training" and store.lease_holder(settings.database_url) is None:
            return rows[0]
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish")


def test_implicit_kind_without_a_model_is_503(client: TestClient) -> None:
    r = client.get("/v1/users/U0001/recommendations", params={"kind": "implicit"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_live_model"
    assert client.get("/v1/models/live", params={"kind": "implicit"}).status_code == 503


def test_train_needs_the_admin_key_and_runs_once(client: TestClient, api_settings: AlsSettings) -> None:
    assert client.post("/v1/models/train").status_code == 401
    assert client.post("/v1/models/train", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer admin-secret"}
    first = client.post("/v1/models/train", headers=auth, json={"implicit": True})
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["kind"] == "implicit" and body["executor"] == "thread"
    second = client.post("/v1/models/train", headers=auth)
    assert second.status_code == 409 and second.json()["error"]["code"] == "training_in_progress"
    row = _wait_for_run(api_settings, body["run_id"])
    assert row.status == "live" and row.kind == "implicit", row.error
    live = client.get("/v1/models/live", params={"kind": "implicit"}).json()
    assert live["version"] == row.version and live["metrics"]["recall_at_10"] > 0
    assert live["trained_at"] and live["params"]["implicit"] is True


def test_recommendations_for_a_known_user(client: TestClient, seeded_db: pd.DataFrame) -> None:
    r = client.get("/v1/users/U0001/recommendations", params={"k": 7, "kind": "implicit"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "U0001" and body["kind"] == "implicit" and len(body["items"]) == 7
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = set(seeded_db.loc[seeded_db["user_id"] == "U0001", "parent_asin"])
    assert not seen & {i["parent_asin"] for i in body["items"]}


def test_unknown_user_is_404_with_a_code(client: TestClient) -> None:
    r = client.get("/v1/users/never-seen/recommendations", params={"kind": "implicit"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "user_not_in_model"


@pytest.mark.parametrize("k", ["0", "101", "ten"])
def test_k_is_validated(client: TestClient, k: str) -> None:
    r = client.get("/v1/users/U0001/recommendations", params={"k": k})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_versions_listing_health_and_metrics(client: TestClient) -> None:
    versions = client.get("/v1/models", params={"limit": 5}).json()
    assert versions and versions == sorted(versions, key=lambda v: -v["version"])
    assert client.get(f"/v1/models/{versions[0]['version']}").json()["version"] == versions[0]["version"]
    assert client.get("/v1/models/999999").json()["error"]["code"] == "model_not_found"
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"]["ok"] is True
    assert "recsys_http_requests_total" in client.get("/metrics").text
