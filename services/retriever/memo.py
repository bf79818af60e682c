"""Precomputed hybrid answers: the ranking core's list for a user, kept until anything it depends on
changes, and computed ahead of the user's request when their data or the live models change.

A ranking-core answer is a pure function of the user's history (oldest first), the items excluded
beyond it, ``k``, the profile's dislikes vector, the index snapshot (the dislike push reads its
vectors), the catalog generation (the rating floor, what can be shown) and the live core. The
:func:`answer_key` digest covers all of them, so a stored answer is served only while it is exactly
what the core would compute now: nothing here is stale by design, and there is no TTL.

:class:`Precomputer` is one background thread of the retriever. It ranks a user when a ready profile
arrives (``profiles.v1``) and re-ranks every remembered user when the snapshot, the catalog or the core
changes, at the ``k`` the gateway asks by default, so a request finds its answer ready. It yields the
interpreter between users (at most about half the process' time), and a request that finds no answer
computes it inline and stores it.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter

from shared.logging import get_logger
from shared.lru import LruCache

log = get_logger(__name__)

MEMO = Counter("recsys_retriever_precomputed_total", "hybrid answers served or stored by the memo",
               ["result"])  # hit | miss | stored | fresh (the caller asked for a computed one)
PRECOMPUTED = Counter("recsys_retriever_precompute_total", "hybrid answers computed ahead of a request",
                      ["trigger", "result"])  # profile | versions ; done | deferred | failed


class NotYet(Exception):
    """Raised by a precompute that cannot rank yet (no snapshot or core): the user is kept and ranked
    when the live versions first appear or next change."""


def answer_key(*, history: Sequence[str], exclude: Iterable[str], k: int, dislike: np.ndarray | None,
               versions: tuple[Any, ...]) -> bytes:
    """The digest of everything a ranking-core answer depends on (``history`` oldest first; the
    excluded items the history already covers do not change the answer and are left out)."""
    seen = set(history)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((k, versions)).encode())
    h.update(b"\x00".join(a.encode() for a in history))
    h.update(b"\x01")
    h.update(b"\x00".join(sorted(a.encode() for a in set(exclude) if a not in seen)))
    h.update(b"\x01")
    if dislike is not None:
        h.update(np.ascontiguousarray(dislike, dtype=np.float32).tobytes())
    return h.digest()


class AnswerMemo:
    """One stored answer per (user, k), the newest; LRU over users (``size`` 0 keeps nothing)."""

    def __init__(self, size: int) -> None:
        self._lru: LruCache[tuple[str, int], tuple[bytes, dict[str, Any]]] = LruCache(size)

    def get(self, user_id: str, k: int, key: bytes) -> dict[str, Any] | None:
        found = self._lru.get((user_id, k))
        if found is None or found[0] != key:
            return None
        return found[1]

    def put(self, user_id: str, k: int, key: bytes, answer: dict[str, Any]) -> None:
        self._lru.put((user_id, k), (key, answer))

    def users(self) -> list[str]:
        return list(dict.fromkeys(u for u, _ in self._lru.keys()))

    def __len__(self) -> int:
        return len(self._lru)


class Precomputer:
    """The background thread that fills :class:`AnswerMemo` ahead of requests.

    ``compute(user_id)`` runs the retriever's own query for the user (it stores the answer; it raises
    :class:`NotYet` before the core is live, and the user is ranked once it is);
    ``versions()`` returns the live (snapshot, catalog, core) versions; ``remembered()`` the users whose
    answers the memo holds. Users queue at most once; the thread stops with ``stop``."""

    def __init__(self, *, compute: Callable[[str], Any], versions: Callable[[], tuple[Any, ...]],
                 remembered: Callable[[], list[str]], poll_s: float = 1.0, max_queued: int = 100_000) -> None:
        self._compute = compute
        self._versions = versions
        self._remembered = remembered
        self.poll_s = poll_s
        self.max_queued = max_queued
        self._queue: OrderedDict[str, str] = OrderedDict()  # user -> trigger
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_versions: tuple[Any, ...] | None = None
        self._deferred: set[str] = set()  # asked before the core could rank them
        self.done = 0

    def start(self) -> Precomputer:
        self._thread = threading.Thread(target=self._run, name="retriever-precompute", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def ask(self, user_id: str, trigger: str = "profile") -> None:
        with self._lock:
            if user_id in self._queue or len(self._queue) >= self.max_queued:
                return
            self._queue[user_id] = trigger
        self._wake.set()

    def waiting(self) -> int:
        return len(self._queue)

    def _check_versions(self) -> None:
        try:
            now = self._versions()
        except Exception:  # not ready yet (no snapshot, no core)
            return
        if now != self._seen_versions:
            self._seen_versions = now
            with self._lock:
                deferred, self._deferred = self._deferred, set()
            for u in [*self._remembered(), *sorted(deferred)]:
                self.ask(u, "versions")

    def _next(self) -> tuple[str, str] | None:
        with self._lock:
            return self._queue.popitem(last=False) if self._queue else None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._check_versions()
            job = self._next()
            if job is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            user_id, trigger = job
            started = time.perf_counter()
            try:
                self._compute(user_id)
                self.done += 1
                PRECOMPUTED.labels(trigger, "done").inc()
            except NotYet:
                with self._lock:
                    self._deferred.add(user_id)
                PRECOMPUTED.labels(trigger, "deferred").inc()
            except Exception as e:
                PRECOMPUTED.labels(trigger, "failed").inc()
                log.warning("precompute failed", extra={"user_id": user_id, "error": str(e)[:300]})
            # yield as long as the work took: requests on the event loop get the interpreter
            self._stop.wait(time.perf_counter() - started)
