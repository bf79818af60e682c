"""Answers computed ahead of requests, and stale answers refreshed behind them.

A recommendation request should read an answer, not compute one (the gorse shape: workers precompute,
servers read). The gateway's answer cache (``service.AnswerCache``) holds one answer per (user,
strategy, k, reasons backend), valid only for the user's stamp (profile version and status, number and
newest of their reviews) it was built with. This module fills it:

* **ahead of requests**: a ready or cold-start profile on ``profiles.v1`` means the user's data has
  settled (the profiler debounces their reviews), so their default answers (``GATEWAY_PRECOMPUTE_K``
  items for each of ``GATEWAY_PRECOMPUTE_STRATEGIES``) are computed now, through the same code a request
  runs; a promoted model on ``models.v1`` marks every answer stale (each is recomputed when next asked)
  and computes the remembered users' defaults that are missing.
* **behind requests** (stale-while-revalidate, RFC 5861): an answer older than ``GATEWAY_CACHE_TTL_S``
  but younger than that plus ``GATEWAY_CACHE_STALE_S`` is served at once (``X-Cache: stale``) and
  recomputed here, so the next request reads a fresh one. What no event announces (the retriever's
  ranking-core refit) reaches users this way.
* **after the LLM worker writes**: the explainer worker only appends to the ``explanations`` and
  ``reranks`` tables; every ``GATEWAY_FOLLOW_S`` the gateway reads the users with new rows and
  recomputes their cached answers, so the LLM reasons and the stored llm_only re-rank replace the
  templates and the pending order within about that long.

A user's own change (a new review, a new profile) is never served stale: it changes the stamp, and
the request computes. Jobs run one at a time on the serving event loop, each after the requests in
flight are answered (waiting at most ``GATEWAY_PRECOMPUTE_WAIT_S``), so precomputing costs requests no
queueing beyond one answer's CPU. Jobs computed ahead of any request ask the explainer to queue no
LLM work (the profile's own precompute does); a refresh a user's request triggered may.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from shared.events import ModelEvent, ProfileEvent
from shared.logging import get_logger

log = get_logger(__name__)

PRECOMPUTED = Counter("recsys_gateway_precompute_total", "answers computed ahead of or behind requests",
                      ["trigger", "result"])  # profile | model | stale | llm ; done | degraded | failed | dropped


@dataclass(frozen=True)
class Job:
    user_id: str
    strategy: str
    k: int
    backend: str


class Precomputer:
    """One asyncio task that computes queued answers, each after the requests in flight.

    ``compute(job, ahead)`` computes and stores one answer (``ahead``: no request asked for it);
    ``busy()`` says whether requests are in flight."""

    def __init__(self, *, compute: Callable[[Job, bool], Awaitable[Any]], busy: Callable[[], bool],
                 wait_s: float, max_queued: int) -> None:
        self._compute = compute
        self._busy = busy
        self.wait_s = wait_s
        self.max_queued = max_queued
        self._queue: OrderedDict[Job, tuple[str, bool]] = OrderedDict()  # job -> (trigger, ahead)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.done = 0

    def start(self) -> Precomputer:
        """Start on the running event loop (the serving one)."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="gateway-precompute")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def ask(self, jobs: Iterable[Job], *, trigger: str, ahead: bool) -> None:
        """Queue jobs (on the event loop). A job already queued keeps its place; a request's refresh
        of a job queued ahead makes it a request's (it may then queue LLM work)."""
        for job in jobs:
            queued = self._queue.get(job)
            if queued is not None:
                if queued[1] and not ahead:
                    self._queue[job] = (trigger, False)
                continue
            if len(self._queue) >= self.max_queued:
                PRECOMPUTED.labels(trigger, "dropped").inc()
                continue
            self._queue[job] = (trigger, ahead)
        if self._queue and self._wake is not None:
            self._wake.set()

    def waiting(self) -> int:
        return len(self._queue)

    async def _after_requests(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._after_requests()
            if not self._queue:
                continue
            job, (trigger, ahead) = self._queue.popitem(last=False)
            try:
                answer = await self._compute(job, ahead)
                self.done += 1
                # a degraded answer is not stored: the user's request computes it again
                degraded = isinstance(answer, dict) and answer.get("degraded")
                PRECOMPUTED.labels(trigger, "degraded" if degraded else "done").inc()
                if degraded:
                    log.info("precomputed answer degraded, not stored",
                             extra={"user_id": job.user_id, "strategy": job.strategy, "notes": answer.get("notes")})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the request computes it then; nothing is lost
                PRECOMPUTED.labels(trigger, "failed").inc()
                log.warning("precompute failed", extra={"user_id": job.user_id, "strategy": job.strategy,
                                                        "error": str(e)[:300]})


async def follow_llm_writes(*, read: Callable[[Any], Awaitable[tuple[set[str], Any]]],
                            on_users: Callable[[set[str]], None], every_s: float) -> None:
    """Every ``every_s``: the users the LLM worker wrote reasons or a re-rank for since the last look
    (``read(marks) -> (users, marks)``, ``read(None)`` the marks to start from), handed to ``on_users``.
    A failed read is retried at the next turn from the same marks."""
    marks: Any = None
    while True:
        try:
            users, marks = await read(marks)
            if users:
                on_users(users)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("following the LLM writes failed", extra={"error": str(e)[:300]})
        await asyncio.sleep(every_s)


def jobs_for(user_ids: Iterable[str], *, strategies: Sequence[str], k: int, backend: str) -> list[Job]:
    return [Job(u, s, k, backend) for u in dict.fromkeys(user_ids) for s in strategies]


def read_events(records: Sequence[Any], *, models_topic: str) -> tuple[list[str], bool]:
    """(users whose profile was written, whether a model version was promoted) from a batch of
    ``profiles.v1`` / ``models.v1`` records (``models_topic``: the latter's name with the deployment's
    prefix); malformed ones are logged and skipped."""
    from shared.kafka import decode_value

    users: list[str] = []
    promoted = False
    for r in records:
        try:
            if r.topic == models_topic:
                promoted = ModelEvent.model_validate(decode_value(r)).promoted or promoted
            else:
                users.append(ProfileEvent.model_validate(decode_value(r)).user_id)
        except ValueError:
            log.warning("invalid event skipped", extra={"topic": r.topic, "partition": r.partition,
                                                        "offset": r.offset})
    return users, promoted
