"""Issue 14: the llm_only re-rank runs on the explainer's LLM thread, never in the request; requests get
the stored re-rank (PostgreSQL ``reranks``) or, while it is queued, the retriever order (pending)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.explainer.app import create_app
from services.explainer.config import ExplainerSettings
from services.explainer.llm import LLMReasoner
from services.explainer.rerank import rank_by_scores
from services.explainer.service import INLINE, PRECOMPUTED, REQUESTED, LlmThread, stored_rows
from shared.db import session_scope
from shared.llm import CallableScorer
from shared.models import StoredRerank
from tests.explainer.conftest import make_items


@pytest.fixture()
def auto_settings(explainer_settings: ExplainerSettings) -> ExplainerSettings:
    """The default mode: requests never wait for the LLM."""
    return explainer_settings.model_copy(update={"EXPLAINER_INLINE_LLM": False})


class _Cand:
    def __init__(self, asin: str) -> None:
        self.parent_asin = asin


def test_stored_rows_keep_the_stored_order_of_the_candidates_still_there() -> None:
    cands = [_Cand(a) for a in "ABCDEFG"]
    ranked = [{"parent_asin": a, "rank": n, "reason": None} for n, a in enumerate("GXCEA", start=1)]
    rows, parsed = stored_rows(ranked, cands, 4, method="label_logits")
    # X is no candidate any more: the scored ones close up, the retriever order fills the rest
    assert [cands[i].parent_asin for _, i, _ in rows] == ["G", "C", "E", "A"] and parsed == 4
    rows, parsed = stored_rows(ranked[:2], cands, 4, method="label_logits")
    assert [cands[i].parent_asin for _, i, _ in rows] == ["G", "A", "B", "C"] and parsed == 1
    text = [{"parent_asin": "D", "rank": 1, "reason": "r1"}, {"parent_asin": "B", "rank": 3, "reason": None}]
    rows, parsed = stored_rows(text, cands, 4, method="text")  # generated ranks keep their places
    assert [(r, cands[i].parent_asin, why) for r, i, why in rows] == [
        (1, "D", "r1"), (2, "A", None), (3, "B", None), (4, "C", None)] and parsed == 2


def test_the_llm_thread_runs_request_work_before_precomputing() -> None:
    pool = LlmThread("test-llm")
    gate = threading.Event()
    order: list[str] = []
    try:
        pool.submit_at(PRECOMPUTED, gate.wait, 10)  # holds the thread while the rest queues
        futs = [pool.submit_at(PRECOMPUTED, order.append, "precomputed"),
                pool.submit_at(REQUESTED, order.append, "requested"),
                pool.submit_at(INLINE, order.append, "inline")]
        gate.set()
        for f in futs:
            f.result(timeout=10)
        assert order == ["inline", "requested", "precomputed"]
    finally:
        pool.shutdown()


def _scorer(gate: threading.Event | None = None) -> tuple[LLMReasoner, list[int]]:
    calls: list[int] = []

    def scores(prompt: str, labels: Sequence[str]) -> list[float]:
        if gate is not None:
            gate.wait(10)
        calls.append(len(labels))
        return [float((5 * i) % 13) for i in range(len(labels))]

    llm = CallableScorer(lambda *_a, **_k: "unused", scores, name="stored-scorer")
    return LLMReasoner(llm, batch=2, max_new_tokens=48, max_chars=160, max_ungrounded=2), calls


def _until(fn: Any, timeout_s: float = 20.0) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_request_gets_pending_then_the_stored_re_rank(auto_settings: ExplainerSettings, unique: str) -> None:
    cands = make_items(30, seed=41)
    gate = threading.Event()
    reasoner, calls = _scorer(gate)
    body = {"user_id": unique, "summary": "Loves soft cotton blankets.", "candidates": cands, "k": 5,
            "profile_version": 3, "catalog_version": "idx-7"}
    with TestClient(create_app(auto_settings, reasoner=reasoner)) as c:
        first = c.post("/v1/rerank", json=body).json()
        # the model is busy (gated): the request did not wait for it
        assert first["rerank"] == "pending" and first["method"] == "none" and first["fallback"] is True
        assert [i["parent_asin"] for i in first["items"]] == [x["parent_asin"] for x in cands[:5]]
        assert all(i["source"] == "template" and i["reason"] for i in first["items"])
        again = c.post("/v1/rerank", json=body).json()  # the same key is queued once
        assert again["rerank"] == "pending"
        gate.set()
        stored = _until(lambda: (b := c.post("/v1/rerank", json=body).json())["rerank"] == "stored" and b)
        expected = rank_by_scores([float((5 * i) % 13) for i in range(30)], n_candidates=30, k=5)
        assert [i["parent_asin"] for i in stored["items"]] == [cands[j]["parent_asin"] for _, j, _ in expected]
        assert stored["method"] == "label_logits" and stored["parsed"] == 5 and stored["fallback"] is False
        assert calls == [30]  # one forward pass for both pending requests and the stored answers
        # a new profile version (or index version) is another key: pending again, queued again
        newer = c.post("/v1/rerank", json={**body, "profile_version": 4}).json()
        assert newer["rerank"] == "pending"
        _until(lambda: c.post("/v1/rerank", json={**body, "profile_version": 4}).json()["rerank"] == "stored")
        assert len(calls) == 2
    with session_scope(auto_settings.database_url) as s:
        rows = s.execute(select(StoredRerank.profile_version, StoredRerank.catalog_version, StoredRerank.items)
                         .where(StoredRerank.user_id == unique).order_by(StoredRerank.profile_version)).all()
    assert [(v, cat) for v, cat, _ in rows] == [(3, "idx-7"), (4, "idx-7")]
    assert len(rows[0][2]) == 30  # label scoring ranks every candidate
    # another explainer replica (a fresh process: empty LRU) serves the stored re-rank from the database
    with TestClient(create_app(auto_settings, reasoner=_scorer()[0])) as c:
        served = c.post("/v1/rerank", json=body).json()
    assert served["rerank"] == "stored" and served["items"] == stored["items"]


def test_a_stored_re_rank_skips_items_that_are_no_longer_candidates(
    auto_settings: ExplainerSettings, unique: str
) -> None:
    cands = make_items(20, seed=43)
    reasoner, _ = _scorer()
    explainer_settings = auto_settings
    body = {"user_id": unique, "summary": "Wants a ceramic mug.", "candidates": cands, "k": 5,
            "profile_version": 1, "catalog_version": "idx-1"}
    with TestClient(create_app(explainer_settings, reasoner=reasoner)) as c:
        inline = c.post("/v1/rerank", json={**body, "mode": "inline"}).json()
        assert inline["rerank"] == "inline" and inline["parsed"] == 5
        top = [i["parent_asin"] for i in inline["items"]]
        fewer = [x for x in cands if x["parent_asin"] != top[0]]  # the user reviewed the first pick
        served = c.post("/v1/rerank", json={**body, "candidates": fewer}).json()
    assert served["rerank"] == "stored"
    assert [i["parent_asin"] for i in served["items"]][:4] == top[1:]


def test_template_only_explainer_says_none(explainer_settings: ExplainerSettings) -> None:
    with TestClient(create_app(explainer_settings, reasoner=None)) as c:
        body = c.post("/v1/rerank", json={"summary": "x", "candidates": make_items(6, seed=2), "k": 5}).json()
    assert body["rerank"] == "none" and body["parsed"] == 0


def test_the_llm_thread_runs_at_background_priority_and_leaves_the_rest_alone() -> None:
    import os

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = niceness()
    pool = LlmThread("test-nice", nice=before + 7)
    try:
        assert pool.submit(niceness).result(timeout=10) == before + 7
        # a thread the LLM thread starts (llama.cpp's compute threads) inherits it
        inherited: list[int] = []

        def spawn() -> None:
            t = threading.Thread(target=lambda: inherited.append(niceness()))
            t.start()
            t.join()

        pool.submit(spawn).result(timeout=10)
        assert inherited == [before + 7]
    finally:
        pool.shutdown()
    assert niceness() == before  # the event loop's threads keep theirs


def test_a_request_jumps_ahead_of_the_precomputed_job_for_its_key(auto_settings: ExplainerSettings,
                                                                   unique: str) -> None:
    """The profile event queued user C's re-rank behind A and B (precomputing); C's request queues it
    again ahead of them, and the job that runs second finds it stored and does nothing."""
    gate = threading.Event()
    seen: list[str] = []

    def scores(prompt: str, labels: Sequence[str]) -> list[float]:
        gate.wait(10)
        seen.append(next(u for u in "ABC" if f"Customer {u} " in prompt))
        return [float(i) for i in range(len(labels))]

    llm = CallableScorer(lambda *_a, **_k: "unused", scores, name=f"jump-{unique}")
    reasoner = LLMReasoner(llm, batch=2, max_new_tokens=48, max_chars=160, max_ungrounded=2)
    cands = make_items(10, seed=44)
    with TestClient(create_app(auto_settings, reasoner=reasoner)) as c:
        svc = c.app.state.explainer  # type: ignore[attr-defined]
        svc._llm_pool.submit_at(PRECOMPUTED, gate.wait, 10)  # the model is busy while the jobs queue
        bodies = {u: {"user_id": f"{unique}{u}", "summary": f"Customer {u} likes soft mugs.", "candidates": cands,
                      "k": 5, "profile_version": 1, "catalog_version": "idx"} for u in "ABC"}
        for u in "ABC":
            b = bodies[u]
            key = svc.rerank_key(user_id=b["user_id"], profile_version=1, catalog_version="idx",
                                 summary=b["summary"], candidates=[_Cand(x["parent_asin"]) for x in cands])
            assert svc.rerank_in_background(key, summary=b["summary"], candidates=_facts(cands), k=5,
                                            priority=PRECOMPUTED)
        assert c.post("/v1/rerank", json=bodies["C"]).json()["rerank"] == "pending"
        gate.set()
        _until(lambda: svc.background_reranks == 0)
        assert seen == ["C", "A", "B"]  # C once: its precomputed job found the re-rank stored
        assert all(c.post("/v1/rerank", json=bodies[u]).json()["rerank"] == "stored" for u in "ABC")


def _facts(items: list[dict[str, Any]]) -> list[Any]:
    from services.explainer.schemas import ItemFacts

    return [ItemFacts.model_validate(i) for i in items]


def test_profile_events_are_noted_at_once_and_precomputed_on_their_own_thread(
    auto_settings: ExplainerSettings, monkeypatch: Any
) -> None:
    from services.explainer.service import Explainer
    from services.explainer.store import ReasonCache
    from shared.events import ProfileEvent

    done: list[tuple[str, int]] = []
    release = threading.Event()

    def slow_precompute(self: Any, *, user_id: str, version: int) -> int:
        release.wait(10)  # the retriever is slow: the handler must not wait for it
        done.append((user_id, version))
        return 0

    monkeypatch.setattr(Explainer, "precompute", slow_precompute)
    svc = Explainer(settings=auto_settings, reasoner=_scorer()[0], cache=ReasonCache(database_url=None, lru_size=10))

    class Rec:
        def __init__(self, user: str, version: int, status: str = "ready") -> None:
            self.value = ProfileEvent(user_id=user, version=version, status=status).model_dump_json().encode()

    try:
        t0 = time.monotonic()
        svc.handle_profile_events([Rec("U1", 1), Rec("U2", 1), Rec("U1", 2), Rec("U3", 1, "failed")])
        assert time.monotonic() - t0 < 1.0
        release.set()
        _until(lambda: {("U1", 2), ("U2", 1)} <= set(done))
        time.sleep(0.2)
        # every ready user with its newest version (U1 at version 1 too when the thread took it before
        # version 2 arrived, never twice at the same version); a failed profile not at all
        assert sorted(set(done)) == sorted(done) and {u for u, _ in done} == {"U1", "U2"}, done
    finally:
        svc.close()


def test_a_worker_process_lowers_its_whole_scheduling_group(tmp_path: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    has_groups = Path("/proc/self/autogroup").exists()  # Linux with autogroups (the default)
    code = ("import os, threading; from pathlib import Path; from shared.llm import background_priority; "
            "assert background_priority(9, whole_process=True); "
            "g = Path('/proc/self/autogroup'); "
            "print(g.read_text().split()[-1] if g.exists() else '-', "
            "os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         start_new_session=True, check=True).stdout.split()
    assert out == (["9", "9"] if has_groups else ["-", "9"])


def test_the_default_worker_priority_is_idle_scheduling(tmp_path: Any) -> None:
    """LLM_NICE 19 (the default): the worker's threads run under SCHED_IDLE, its autogroup at 19."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from shared.config import LlmSettings

    assert LlmSettings().LLM_NICE == 19
    has_groups = Path("/proc/self/autogroup").exists()
    code = ("import os, threading; from pathlib import Path; from shared.llm import background_priority; "
            "assert background_priority(19, whole_process=True); "
            "g = Path('/proc/self/autogroup'); t = threading.Thread(target=lambda: print(os.sched_getscheduler(0))); "
            "t.start(); t.join(); "
            "print(g.read_text().split()[-1] if g.exists() else '-', os.sched_getscheduler(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         start_new_session=True, check=True).stdout.split()
    idle = str(os.SCHED_IDLE)
    # a thread it starts afterwards (llama.cpp's) inherits the policy
    assert out == [idle, "19" if has_groups else "-", idle]
