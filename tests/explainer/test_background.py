"""The default mode: a request never waits for the LLM. It gets the cached LLM reasons and templates
for the rest at once (not degraded), and the missing LLM reasons are written in the background for the
next answer (real app, real PostgreSQL reason cache, a scripted LLM)."""
from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from services.explainer.app import create_app
from services.explainer.config import ExplainerSettings
from tests.explainer.conftest import make_items
from tests.explainer.test_app import _reasoner


def _wait(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_request_answers_at_once_and_the_llm_reasons_follow(explainer_settings: ExplainerSettings,
                                                              unique: str) -> None:
    settings = explainer_settings.model_copy(update={"EXPLAINER_INLINE_LLM": False})

    def slow(prompt: str, **_: Any) -> str:
        time.sleep(0.3)  # 4 items: 1.2 s of LLM work that the request must not wait for
        return "A soft cotton pick for your collection." if "cotton" in prompt else "A lovely pick."

    reasoner, llm = _reasoner(slow, f"bg-{unique}")
    items = [{**it, "features": ["soft cotton"]} for it in make_items(4, seed=21)]
    req = {"user_id": unique, "profile": {"liked_features": ["soft cotton"]}, "profile_version": 2, "items": items}
    with TestClient(create_app(settings, reasoner=reasoner)) as c:
        t0 = time.monotonic()
        first = c.post("/v1/explanations", json=req).json()
        took = time.monotonic() - t0
        assert took < 0.5, took
        assert first["degraded"] is False and first["pending"] == 4
        assert [e["source"] for e in first["explanations"]] == ["template"] * 4
        assert all(e["reason"] for e in first["explanations"])
        # the same request while the job runs queues nothing new
        again = c.post("/v1/explanations", json=req).json()
        assert again["pending"] == 4 and again["degraded"] is False
        _wait(lambda: c.get("/readyz").json()["checks"]["model"]["background_jobs"] == 0)
        assert len(llm.calls) == 4  # one job, not two
        second = c.post("/v1/explanations", json=req).json()
        # templates=false (the gateway's way): only the LLM reasons come back; the caller renders the rest
        only = c.post("/v1/explanations", json=req | {"templates": False}).json()
    assert second["pending"] == 0 and second["degraded"] is False
    assert sum(e["source"] == "llm" for e in second["explanations"]) >= 1, second
    assert len(llm.calls) == 4  # the second answer came from the cache
    llm_reasons = [e for e in second["explanations"] if e["source"] == "llm"]
    assert only["explanations"] and all(e["source"] == "llm" for e in only["explanations"])
    assert {e["parent_asin"] for e in llm_reasons} <= {e["parent_asin"] for e in only["explanations"]}


def test_backend_llm_still_waits_for_the_llm(explainer_settings: ExplainerSettings, unique: str) -> None:
    settings = explainer_settings.model_copy(update={"EXPLAINER_INLINE_LLM": False})
    reasoner, llm = _reasoner(lambda p, **_: "A soft cotton pick for your collection.", f"inline-{unique}")
    items = [{**it, "features": ["soft cotton"]} for it in make_items(2, seed=22)]
    with TestClient(create_app(settings, reasoner=reasoner)) as c:
        body = c.post("/v1/explanations", json={"user_id": unique, "profile": {"liked_features": ["soft cotton"]},
                                                 "items": items, "backend": "llm"}).json()
    assert len(llm.calls) == 2 and body["pending"] == 0
    assert any(e["source"] == "llm" for e in body["explanations"])


def test_a_full_background_queue_drops_jobs_without_failing_requests(explainer_settings: ExplainerSettings,
                                                                   unique: str) -> None:
    settings = explainer_settings.model_copy(update={"EXPLAINER_INLINE_LLM": False, "EXPLAINER_BACKGROUND_QUEUE": 1})

    def slow(prompt: str, **_: Any) -> str:
        time.sleep(0.5)
        return "A lovely pick."

    reasoner, _ = _reasoner(slow, f"full-{unique}")
    with TestClient(create_app(settings, reasoner=reasoner)) as c:
        a = c.post("/v1/explanations", json={"user_id": f"{unique}a", "items": make_items(2, seed=1)}).json()
        b = c.post("/v1/explanations", json={"user_id": f"{unique}b", "items": make_items(2, seed=2)}).json()
    assert a["pending"] == 2 and b["pending"] == 0  # the second job did not fit
    assert not a["degraded"] and not b["degraded"] and all(e["reason"] for e in b["explanations"])


def test_an_answer_computed_ahead_queues_no_llm_work(explainer_settings: ExplainerSettings, unique: str) -> None:
    """queue=false (the gateway computing an answer before anyone asked): what is stored comes back, the
    rest is left to the templates, and no LLM reason or re-rank is queued for a list nobody saw."""
    from tests.explainer.test_stored_rerank import _scorer

    settings = explainer_settings.model_copy(update={"EXPLAINER_INLINE_LLM": False})
    reasoner, llm = _reasoner(lambda prompt, **_: "A lovely pick.", f"ahead-{unique}")
    items = make_items(3, seed=22)
    req = {"user_id": unique, "profile": {"liked_features": ["soft cotton"]}, "profile_version": 1,
           "items": items, "templates": False, "queue": False}
    with TestClient(create_app(settings, reasoner=reasoner)) as c:
        ahead = c.post("/v1/explanations", json=req).json()
        assert ahead == {"explanations": [], "backend": ahead["backend"], "degraded": False, "pending": 0}
        time.sleep(0.3)
        assert c.get("/readyz").json()["checks"]["model"]["background_jobs"] == 0
        assert llm.calls == []
        # the same list asked by a request queues its reasons as before
        assert c.post("/v1/explanations", json=req | {"queue": True}).json()["pending"] == 3
    scorer, calls = _scorer()
    body = {"user_id": unique, "summary": "Loves soft cotton.", "candidates": make_items(10, seed=23), "k": 5,
            "profile_version": 1, "catalog_version": "idx-1", "queue": False}
    with TestClient(create_app(settings, reasoner=scorer)) as c:
        assert c.post("/v1/rerank", json=body).json()["rerank"] == "pending"
        time.sleep(0.3)
        assert calls == [] and c.post("/v1/rerank", json=body).json()["rerank"] == "pending"
