"""Issue 14: the explainer's LLM runs in its own worker process (``recsys worker explainer``, Celery on the
session's real Redis, the real packaged model). The serving explainer loads no model: it answers at once
from what the worker stored and templates, and queues what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from services.explainer.app import create_app
from services.explainer.config import ExplainerSettings
from shared.config import CommonSettings
from tests.explainer.conftest import make_items, make_profile
from tests.utils.settings import service_settings

SUMMARY = "The customer buys soft cotton blankets. They value comfort. They will likely buy more bedding."


@pytest.fixture()
def worker_settings(settings: CommonSettings, unique: str) -> ExplainerSettings:
    """The default mode (the LLM in the worker) on queues of this test only."""
    return service_settings(ExplainerSettings, settings, EXPLAINER_QUEUE=f"explainer-{unique}",
                            EXPLAINER_PRECOMPUTE_QUEUE=f"explainer-pre-{unique}", EXPLAINER_PRECOMPUTE=False,
                            LLM_BACKEND="auto")


def _queued(s: ExplainerSettings, queue: str) -> int:
    return int(redis.Redis.from_url(s.celery_broker_url).llen(queue))


def _wait(what: str, predicate: Any, timeout_s: float, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def run_worker(worker_settings: ExplainerSettings, tmp_path: Path) -> Iterator[Any]:
    """Start `recsys worker explainer` on this test's queues; stopped (and reaped) at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "worker.log"

    def start(log: Path = log, **extra: str) -> subprocess.Popen[bytes]:
        env = {**os.environ,
               **{f"RECSYS_{k}": str(v) for k, v in {
                   "ENVIRONMENT": "test", "HOME": tmp_path, "DATABASE_URL": worker_settings.database_url,
                   "CELERY_BROKER_URL": worker_settings.celery_broker_url,
                   "CELERY_RESULT_BACKEND": worker_settings.celery_result_backend,
                   "EXPLAINER_QUEUE": worker_settings.EXPLAINER_QUEUE,
                   "EXPLAINER_PRECOMPUTE_QUEUE": worker_settings.EXPLAINER_PRECOMPUTE_QUEUE,
                   "LLM_BACKEND": "auto", **extra}.items()}}
        p = subprocess.Popen([sys.executable, "-m", "tools.cli", "worker", "explainer"], env=env,
                             stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    start.log = log  # type: ignore[attr-defined]
    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_the_serving_explainer_loads_no_model_and_the_worker_writes_the_re_rank(
    worker_settings: ExplainerSettings, run_worker: Any, unique: str
) -> None:
    cands = make_items(12, seed=31)
    req = {"user_id": unique, "summary": SUMMARY, "profile_version": 3, "candidates": cands, "k": 5}
    with TestClient(create_app(worker_settings)) as c:
        model = c.get("/readyz").json()["checks"]["model"]
        assert model["llm_worker"] is True and model["llm_loaded"] is False
        assert c.app.state.explainer.reasoner is None  # type: ignore[attr-defined]
        t0 = time.monotonic()
        first = c.post("/v1/rerank", json=req).json()
        assert time.monotonic() - t0 < 1.0
        assert first["rerank"] == "pending" and first["fallback"] is True
        assert [i["parent_asin"] for i in first["items"]] == [x["parent_asin"] for x in cands[:5]]
        assert all(i["reason"] and i["source"] == "template" for i in first["items"])
        # asked again while queued: one job, not two (and inline is served like auto: no model here)
        again = c.post("/v1/rerank", json={**req, "mode": "inline"}).json()
        assert again["rerank"] == "pending"
        _wait("the job on the broker", lambda: _queued(worker_settings, worker_settings.EXPLAINER_QUEUE) == 1, 10)
        time.sleep(0.5)
        assert _queued(worker_settings, worker_settings.EXPLAINER_QUEUE) == 1

        worker = run_worker()
        stored = _wait("the stored re-rank", lambda: (b := c.post("/v1/rerank", json=req).json())["rerank"]
                       == "stored" and b, timeout_s=300, every_s=1.0)
        assert worker.poll() is None, run_worker.log.read_text()[-3000:]
    assert stored["method"] == "label_logits" and stored["parsed"] == 5 and stored["fallback"] is False
    assert len({i["parent_asin"] for i in stored["items"]}) == 5
    assert _queued(worker_settings, worker_settings.EXPLAINER_QUEUE) == 0


def test_the_worker_writes_the_reasons_a_request_queued(
    worker_settings: ExplainerSettings, run_worker: Any, unique: str
) -> None:
    items = make_items(4, seed=21)
    req = {"user_id": unique, "profile": make_profile(21), "profile_version": 1, "items": items}
    with TestClient(create_app(worker_settings)) as c:
        first = c.post("/v1/explanations", json=req).json()
        assert first["degraded"] is False and first["pending"] == 4
        assert [e["source"] for e in first["explanations"]] == ["template"] * 4
        run_worker()

        def llm_reasons() -> Any:
            body = c.post("/v1/explanations", json=req).json()
            return body if any(e["source"] == "llm" for e in body["explanations"]) else None

        second = _wait("LLM reasons in the cache", llm_reasons, timeout_s=300, every_s=1.0)
    assert second["degraded"] is False and second["backend"] == worker_settings.LLM_MODEL
    assert all(e["reason"] for e in second["explanations"])


def test_a_broker_that_is_down_never_holds_a_request(worker_settings: ExplainerSettings, unique: str) -> None:
    down = worker_settings.model_copy(update={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    items = make_items(3, seed=41)
    with TestClient(create_app(down)) as c:
        for _ in range(3):
            t0 = time.monotonic()
            body = c.post("/v1/explanations", json={"user_id": unique, "profile_version": 1, "items": items,
                                                     "profile": make_profile(41)}).json()
            assert time.monotonic() - t0 < 1.0
            assert body["degraded"] is False and all(e["reason"] for e in body["explanations"])
        jobs = c.app.state.explainer.remote  # type: ignore[attr-defined]
        _wait("the failed send", lambda: jobs.waiting == 0, timeout_s=30)
    from services.explainer.tasks import ENQUEUED

    assert ENQUEUED.labels("write_reasons", "failed")._value.get() >= 1


def test_a_worker_killed_mid_job_loses_nothing_and_requests_never_notice(
    worker_settings: ExplainerSettings, run_worker: Any, unique: str, tmp_path: Path
) -> None:
    """SIGKILL the worker while it re-ranks: requests keep their answers at once (pending, not
    degraded); the job is delivered again to a second worker (acknowledged late) and stored once."""
    cands = make_items(50, seed=32)
    req = {"user_id": unique, "summary": SUMMARY, "profile_version": 1, "candidates": cands, "k": 5}
    fast = {"EXPLAINER_VISIBILITY_TIMEOUT_S": "4"}
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with TestClient(create_app(worker_settings)) as c:
        first = run_worker(first_log, **fast)
        assert c.post("/v1/rerank", json=req).json()["rerank"] == "pending"
        _wait("the job to start", lambda: "run_batch" in first_log.read_text()
              and "received" in first_log.read_text(), timeout_s=300, every_s=0.05)
        time.sleep(0.3)
        os.killpg(first.pid, signal.SIGKILL)  # no goodbye: no ack, no requeue by the worker itself
        first.wait(timeout=10)
        during = c.post("/v1/rerank", json=req).json()
        assert during["rerank"] == "pending", "the job finished before the kill; nothing was tested"
        assert all(i["reason"] for i in during["items"]) and during["fallback"] is True
        run_worker(second_log, **fast)
        stored = _wait("the redelivered job", lambda: (b := c.post("/v1/rerank", json=req).json())["rerank"]
                       == "stored" and b, timeout_s=300, every_s=1.0)
    assert stored["parsed"] == 5 and len({i["parent_asin"] for i in stored["items"]}) == 5
    assert "run_batch" in second_log.read_text()


def test_a_burst_of_asks_is_sent_in_a_few_batches(worker_settings: ExplainerSettings, unique: str) -> None:
    """A broker send costs milliseconds of CPU (3 ms on the embedded SQLite transport): 40 users' first
    requests at once become at most a few messages, every job in one of them."""
    import json

    from services.explainer.schemas import ItemFacts
    from services.explainer.tasks import TASK_BATCH, CeleryJobs

    jobs = CeleryJobs(worker_settings)
    try:
        items = [ItemFacts.model_validate(i) for i in make_items(3, seed=51)]
        for n in range(40):
            assert jobs.reasons(priority=1, user_id=f"{unique}-{n}", profile_version=1, terms=["soft"],
                                items=items, key=(f"{unique}-{n}", 1, "m", ("a",)))
        for n in range(3):  # precompute jobs go one per message (a request's job waits behind one, not 32)
            assert jobs.precompute(user_id=f"{unique}-{n}", version=1)
        _wait("the sends", lambda: jobs.waiting == 0, timeout_s=30, every_s=0.05)
    finally:
        jobs.close()
    r = redis.Redis.from_url(worker_settings.celery_broker_url)
    messages = [json.loads(m) for m in r.lrange(worker_settings.EXPLAINER_QUEUE, 0, -1)]
    assert 1 <= len(messages) <= 3, len(messages)
    assert all(m["headers"]["task"] == TASK_BATCH for m in messages)
    import base64

    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    assert sum(len(b[0][0]) for b in bodies) == 40  # args[0]: the batch's jobs
    assert r.llen(worker_settings.EXPLAINER_PRECOMPUTE_QUEUE) == 3
    r.delete(worker_settings.EXPLAINER_QUEUE, worker_settings.EXPLAINER_PRECOMPUTE_QUEUE)
