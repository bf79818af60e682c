"""The precomputed hybrid answers' key and store (pure logic; the live retriever's use of them is in
test_ranker.py)."""
from __future__ import annotations

import threading
import time

import numpy as np

from services.retriever.memo import AnswerMemo, NotYet, Precomputer, answer_key

VERSIONS = ("v1", 1, 3, "core-a", 7)


def key(**changes: object) -> bytes:
    args: dict = {"history": ["a", "b", "c"], "exclude": ["a", "b", "c"], "k": 5,
                  "dislike": np.ones(4, dtype=np.float32), "versions": VERSIONS}
    args.update(changes)
    return answer_key(**args)


def test_the_key_changes_with_every_input_and_only_with_them() -> None:
    base = key()
    # excluding what the history already holds changes nothing: the core excludes the history anyway
    assert key(exclude=[]) == base and key(exclude=["c", "a"]) == base
    changed = [key(history=["a", "c", "b"]), key(history=["a", "b", "c", "d"]), key(exclude=["z"]),
               key(k=6), key(dislike=None), key(dislike=np.full(4, 2.0, dtype=np.float32)),
               key(versions=("v2", 1, 3, "core-a", 7)), key(versions=("v1", 1, 4, "core-a", 7)),
               key(versions=("v1", 1, 3, "core-b", 7))]
    assert all(c != base for c in changed)
    assert len(set(changed)) == len(changed)


def test_the_memo_serves_an_answer_only_for_its_own_key() -> None:
    memo = AnswerMemo(2)
    memo.put("u1", 5, b"k1", {"items": [1]})
    assert memo.get("u1", 5, b"k1") == {"items": [1]}
    assert memo.get("u1", 5, b"k2") is None and memo.get("u1", 6, b"k1") is None
    memo.put("u1", 5, b"k2", {"items": [2]})  # the newest answer replaces the user's old one
    assert memo.get("u1", 5, b"k1") is None and memo.get("u1", 5, b"k2") == {"items": [2]}
    memo.put("u2", 5, b"k", {})
    memo.put("u3", 5, b"k", {})  # size 2: the least recently used user goes
    assert memo.get("u1", 5, b"k2") is None and memo.users() == ["u2", "u3"]


def test_the_precomputer_ranks_asked_users_once_and_everyone_again_when_versions_change() -> None:
    state: dict = {"versions": None, "remembered": []}
    computed: list[str] = []
    lock = threading.Condition()

    def versions() -> tuple:
        if state["versions"] is None:
            raise RuntimeError("no core yet")
        return (state["versions"],)

    def compute(user: str) -> None:
        if state["versions"] is None:
            raise NotYet("no core yet")
        with lock:
            computed.append(user)
            lock.notify_all()

    def wait(n: int) -> None:
        with lock:
            assert lock.wait_for(lambda: len(computed) >= n, timeout=10), computed

    pc = Precomputer(compute=compute, versions=versions, remembered=lambda: list(state["remembered"]),
                     poll_s=0.05)
    pc.ask("u1")
    pc.ask("u1")  # queued once
    assert pc.waiting() == 1
    pc.start()
    try:
        # asked before the core was live: kept, and ranked as soon as the core appears
        deadline = time.monotonic() + 10
        while pc.waiting() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        assert computed == []
        state["versions"] = "v1"
        wait(1)
        assert computed == ["u1"]
        state["remembered"] = ["u1", "u2"]
        state["versions"] = "v2"  # a new core: every remembered user again
        wait(3)
        assert sorted(computed[1:3]) == ["u1", "u2"]
    finally:
        pc.stop()
    assert pc.done >= 3
