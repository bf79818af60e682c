"""Explainer domain logic: the LLM reasoner a deployment loads, reasons for a list of items, and the
llm_only re-rank.

The HTTP layer (app.py) only parses bodies and calls :class:`Explainer`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any, Protocol

from prometheus_client import Counter

from services.explainer.config import ExplainerSettings
from services.explainer.llm import LLMReasoner
from services.explainer.rerank import (
    ANSWER_PREFIX,
    ParsedRank,
    assemble,
    label_prompt,
    parse_ranking,
    rank_by_scores,
    rerank_prompt,
)
from services.explainer.rerank import SYSTEM as RERANK_SYSTEM
from services.explainer.schemas import (
    ExplainRequest,
    ExplainResponse,
    Explanation,
    RankedItem,
    RerankRequest,
    RerankResponse,
)
from services.explainer.store import ANONYMOUS, ReasonCache, RerankKey, RerankStore
from shared.db import run_read
from shared.logging import get_logger
from shared.reasons import TEMPLATE_MODEL, fill_reasons, profile_terms

log = get_logger(__name__)

REASONS = Counter("recsys_explainer_reasons_total", "Reasons returned", ["source"])
CACHE = Counter("recsys_explainer_cache_total", "Reason cache lookups", ["result"])
RERANKS = Counter("recsys_explainer_reranks_total", "Re-rank requests", ["outcome"])
LLM_TIMEOUTS = Counter(
    "recsys_explainer_llm_timeouts_total", "LLM calls that ran past their budget", ["call"]
)
PRECOMPUTE = Counter(
    "recsys_explainer_precompute_total", "Ready profiles whose reasons were precomputed", ["result"]
)  # queued | cached (all there already) | no_profile | no_items | error
BACKGROUND = Counter(
    "recsys_explainer_background_total", "Background LLM reason jobs", ["result"]  # queued|done|dropped|failed
)
BACKGROUND_RERANKS = Counter(
    "recsys_explainer_background_reranks_total", "Background llm_only re-rank jobs", ["result"]
)  # queued | done | dropped | failed | empty (the model ranked nothing: not stored)

# LLM thread priorities: a request's own work first, then what a request queued, then precomputing.
INLINE, REQUESTED, PRECOMPUTED = 0, 1, 2


class LlmThread(Executor):
    """The one thread that owns the model, with a priority queue: work a request waits for runs before
    work a request queued, which runs before precomputing (a profile event for every user)."""

    def __init__(self, name: str, *, nice: int = 0) -> None:
        self._nice = nice
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.submit_at(INLINE, fn, *args, **kwargs)

    def submit_at(self, priority: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the LLM thread is shut down")
        fut: Future[Any] = Future()
        self._queue.put((priority, next(self._seq), (fut, fn, args, kwargs)))
        return fut

    def _run(self) -> None:
        from shared.llm import background_priority

        background_priority(self._nice)  # the model's work yields to the event loop's requests
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            fut, fn, args, kwargs = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:  # the future carries it to whoever waits
                fut.set_exception(e)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    _, _, job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        self._queue.put((-1, -1, None))
        if wait:
            self._thread.join()


class DirectExecutor(Executor):
    """Runs each job at once in the caller's thread (the explainer worker: a Celery task does its LLM
    work before it is acknowledged)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.submit_at(INLINE, fn, *args, **kwargs)

    def submit_at(self, priority: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:
            fut.set_exception(e)
        return fut


class RemoteJobs(Protocol):
    """Where a serving explainer that holds no model sends its LLM work (``services.explainer.tasks``:
    the Celery queues of the explainer worker). Each call returns at once; True when the job is queued
    or already on its way."""

    def reasons(self, *, priority: int, user_id: str | None, profile_version: int, terms: list[str],
                items: Sequence[Any], key: Any) -> bool: ...

    def rerank(self, *, priority: int, key: RerankKey, summary: str | None, candidates: Sequence[Any],
               k: int) -> bool: ...

    def precompute(self, *, user_id: str, version: int) -> bool: ...

    def forget(self, key: Any) -> None:
        """``key``'s work is done (seen stored): a later ask may queue it again."""

    def close(self) -> None: ...


def load_reasoner(*, settings: ExplainerSettings) -> LLMReasoner | None:
    """The LLM reasoner, or None when this deployment is configured template-only.

    A configured LLM that cannot be loaded raises (shared.llm.LLMUnavailable): start-up fails loudly.
    The model is loaded with ``settings``' LLM knobs (``LLM_TIMEOUT_S``, ``LLM_THREADS``, ``LLM_CONTEXT``,
    ``LLM_BATCH_SIZE``); the reasoner hands it ``LLM_BATCH_SIZE`` items per generate call.
    """
    if settings.EXPLAINER_BACKEND == "template" or settings.LLM_BACKEND == "template":
        log.info("explainer is template-only (configured)")
        return None
    from shared.llm import get_llm

    llm = get_llm(settings)
    log.info("explainer LLM loaded", extra={"model": getattr(llm, "name", "?")})
    return LLMReasoner(
        llm,
        batch=settings.LLM_BATCH_SIZE,
        max_new_tokens=settings.EXPLAINER_MAX_NEW_TOKENS,
        max_chars=settings.EXPLAINER_MAX_REASON_CHARS,
        max_ungrounded=settings.EXPLAINER_MAX_UNGROUNDED,
    )


class JobBook:
    """Background jobs queued or running, by key. A key is queued again only when asked at a better
    priority than it waits at (a request's ask jumps ahead of the precomputing one; whichever job runs
    second finds the work done and returns). Not thread-safe: the caller holds its lock."""

    def __init__(self) -> None:
        self._jobs: dict[Any, list[int]] = {}  # key -> [best priority queued, jobs queued or running]

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, key: Any) -> bool:
        return key in self._jobs

    def claim(self, key: Any, priority: int) -> bool:
        """True: queue a job for ``key`` at ``priority`` now; False: one waits at that priority or better."""
        entry = self._jobs.get(key)
        if entry is not None and entry[0] <= priority:
            return False
        if entry is None:
            self._jobs[key] = [priority, 1]
        else:
            entry[0], entry[1] = priority, entry[1] + 1
        return True

    def release(self, key: Any) -> None:
        """One job of ``key`` ran (or was never queued)."""
        entry = self._jobs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._jobs[key]


class Explainer:
    def __init__(
        self,
        *,
        settings: ExplainerSettings,
        reasoner: LLMReasoner | None,
        cache: ReasonCache,
        reranks: RerankStore | None = None,
        remote: RemoteJobs | None = None,
        direct: bool = False,
    ) -> None:
        """``reasoner``: the model this process runs (None: none here). ``remote``: the explainer worker
        that runs it instead (EXPLAINER_LLM_WORKER; this process then holds no model and only reads
        what the worker stored). ``direct``: background jobs run at once in the caller's thread (the
        worker's Celery tasks); otherwise on this process's LLM thread."""
        self.settings = settings
        self.reasoner = reasoner
        self.remote = remote if reasoner is None else None
        self.cache = cache
        self.reranks = reranks or RerankStore(database_url=None, lru_size=settings.EXPLAINER_CACHE_SIZE)
        # One thread owns the model: queued LLM work waits here, not in the default pool that the
        # cache's DB calls use, and a request past its deadline is dropped when its turn comes.
        self._llm_pool: LlmThread | DirectExecutor = (
            DirectExecutor() if direct else LlmThread("explainer-llm", nice=settings.LLM_NICE))
        # background reason jobs queued or running: (user, profile version, model, asins)
        self._background = JobBook()
        # background re-rank jobs queued or running: (user, profile version, catalog version, model)
        self._rerank_jobs = JobBook()
        self._background_lock = threading.Lock()
        # ready profiles waiting for their precompute (user -> newest version): the profiles.v1 handler
        # only notes them, so the consumer polls on time; one thread asks the retriever and queues the jobs
        self._profiles: dict[str, int] = {}
        self._profiles_cv = threading.Condition()
        self._closed = False
        self._precomputer: threading.Thread | None = None

    async def _in_llm_thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._llm_pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        with self._profiles_cv:
            self._closed = True
            self._profiles_cv.notify_all()
        self._llm_pool.shutdown(wait=False, cancel_futures=True)
        if self.remote is not None:
            self.remote.close()

    @property
    def llm_enabled(self) -> bool:
        """An LLM writes reasons and re-ranks: in this process, or in the explainer worker."""
        return self.reasoner is not None or self.remote is not None

    @property
    def backend_name(self) -> str:
        if self.reasoner is not None:
            return self.reasoner.name
        return self.settings.LLM_MODEL if self.remote is not None else "template"

    async def explain(self, req: ExplainRequest) -> ExplainResponse:
        items = req.items
        terms = profile_terms(req.profile, req.summary)
        reasons: list[str | None] = [None] * len(items)
        degraded = False
        use_llm = self.llm_enabled and req.backend != "template"
        # backend=auto never waits for the LLM (unless configured inline): what is cached now, the
        # rest as templates, and the missing LLM reasons written in the background for the next answer.
        # With the explainer worker this process holds no model: nothing here can wait for it.
        inline = (req.backend == "llm" or self.settings.EXPLAINER_INLINE_LLM) and self.reasoner is not None
        pending = 0
        if req.backend == "llm" and not self.llm_enabled:
            degraded = True  # asked for the LLM, this deployment has none: say so
        if use_llm and items:
            model = self.backend_name
            asins = [i.parent_asin for i in items]
            cached, read = self.cache.in_memory(user_id=req.user_id, profile_version=req.profile_version,
                                                model_name=model, asins=asins)
            if read:  # the database only when memory cannot answer (a thread hop costs more than the rest)
                cached = await run_read(self.cache.database_url or "", self.cache.get_many, user_id=req.user_id,
                                        profile_version=req.profile_version, model_name=model, asins=asins)
            CACHE.labels("hit").inc(len(cached))
            CACHE.labels("miss").inc(len(items) - len(cached))
            todo = [i for i, it in enumerate(items) if it.parent_asin not in cached]
            for i, it in enumerate(items):
                reasons[i] = cached.get(it.parent_asin)
            if todo and not inline:
                if req.queue:  # an answer computed ahead of any request queues nothing
                    pending = self.in_background(user_id=req.user_id, profile_version=req.profile_version,
                                                 terms=terms, items=[items[i] for i in todo])
            elif todo:
                assert self.reasoner is not None
                budget = self.settings.EXPLAINER_LLM_BUDGET_S
                deadline = time.monotonic() + budget
                try:
                    generated = await asyncio.wait_for(
                        self._in_llm_thread(
                            self.reasoner.generate,
                            terms=terms,
                            items=[items[i] for i in todo],
                            deadline=deadline,
                        ),
                        timeout=budget + 1.0,
                    )
                except TimeoutError:
                    LLM_TIMEOUTS.labels("explain").inc()
                    generated = [None] * len(todo)
                    degraded = True
                except Exception:
                    log.exception("llm generation failed", extra={"user_id": req.user_id})
                    generated = [None] * len(todo)
                    degraded = True
                if time.monotonic() > deadline:
                    degraded = True  # some items were never tried: they get template reasons
                fresh = []
                for i, text in zip(todo, generated, strict=True):
                    reasons[i] = text
                    if text:
                        fresh.append((items[i].parent_asin, text))
                if fresh:
                    await asyncio.to_thread(
                        self.cache.put_many,
                        user_id=req.user_id,
                        profile_version=req.profile_version,
                        model_name=model,
                        reasons=fresh,
                    )
        backend = self.backend_name if use_llm else "template"
        if not req.templates:  # the caller renders the templates (and drops repeated LLM reasons) itself
            out = [Explanation(parent_asin=it.parent_asin, reason=r, source="llm")
                   for it, r in zip(items, reasons, strict=True) if r]
            if out:
                REASONS.labels("llm").inc(len(out))
            return ExplainResponse(explanations=out, backend=backend, degraded=degraded, pending=pending)
        # A repeated LLM reason is dropped and gets a template instead, like a missing one.
        filled = fill_reasons(
            user_id=req.user_id,
            profile=req.profile,
            summary=req.summary,
            items=items,
            given=[(r, "llm") if r else None for r in reasons],
        )
        out = []
        for it, (reason, source) in zip(items, filled, strict=True):
            out.append(Explanation(parent_asin=it.parent_asin, reason=reason, source=source))
            REASONS.labels(source).inc()
        return ExplainResponse(explanations=out, backend=backend, degraded=degraded, pending=pending)

    def in_background(self, *, user_id: str | None, profile_version: int, terms: Any,
                      items: list[Any], priority: int = REQUESTED) -> int:
        """Queue the LLM reasons of ``items`` for this user and profile version on the LLM thread (the
        result goes to the reason cache); returns how many items were queued (0: already queued, the
        queue is full, or there is no LLM)."""
        if not self.llm_enabled or not items:
            return 0
        model = self.backend_name
        key = (user_id or "", profile_version, model, tuple(sorted(i.parent_asin for i in items)))
        if self.remote is not None:
            queued = self.remote.reasons(priority=priority, user_id=user_id, profile_version=profile_version,
                                         terms=list(terms), items=items, key=key)
            return len(items) if queued else 0
        with self._background_lock:
            if key not in self._background and self._queue_full():
                BACKGROUND.labels("dropped").inc()
                return 0
            if not self._background.claim(key, priority):
                return len(items)  # already on its way, at this priority or better
        BACKGROUND.labels("queued").inc()
        try:
            self._llm_pool.submit_at(priority, self._write_reasons, key, user_id, profile_version, terms, items)
        except RuntimeError:  # shutting down
            with self._background_lock:
                self._background.release(key)
            return 0
        return len(items)

    def _queue_full(self) -> bool:
        return len(self._background) + len(self._rerank_jobs) >= self.settings.EXPLAINER_BACKGROUND_QUEUE

    def _write_reasons(self, key: tuple[str, int, str, tuple[str, ...]], user_id: str | None,
                       profile_version: int, terms: Any, items: list[Any]) -> None:
        """One background job, on the LLM thread: generate, keep the validated reasons, cache them."""
        assert self.reasoner is not None
        try:
            # a job queued twice (precomputed, then asked by a request) or overtaken by another: only
            # what the cache still lacks
            cached = self.cache.get_many(user_id=user_id, profile_version=profile_version, model_name=key[2],
                                         asins=[i.parent_asin for i in items])
            items = [i for i in items if i.parent_asin not in cached]
            if not items:
                BACKGROUND.labels("cached").inc()
                return
            deadline = time.monotonic() + self.settings.EXPLAINER_BACKGROUND_BUDGET_S
            generated = self.reasoner.generate(terms=terms, items=items, deadline=deadline)
            fresh = [(it.parent_asin, text) for it, text in zip(items, generated, strict=True) if text]
            if fresh:
                self.cache.put_many(user_id=user_id, profile_version=profile_version, model_name=key[2],
                                    reasons=fresh)
            BACKGROUND.labels("done").inc()
        except Exception:
            BACKGROUND.labels("failed").inc()
            log.exception("background reasons failed", extra={"user_id": user_id})
        finally:
            with self._background_lock:
                self._background.release(key)

    def precompute(self, *, user_id: str, version: int) -> int:
        """A ready profile (``profiles.v1``): queue the LLM reasons of the user's current hybrid top
        items (asked of the retriever over HTTP, like any client) that the cache lacks. Returns the
        number of items queued. Errors are counted and logged: precomputing is an optimisation."""
        import httpx

        from services.explainer.schemas import ItemFacts, ProfileIn
        from services.explainer.store import profile_for_reasons

        if self.remote is not None:  # the worker reads the profile, asks the retriever and writes
            return int(self.remote.precompute(user_id=user_id, version=version))
        if self.reasoner is None:
            return 0
        try:
            found = profile_for_reasons(self.settings.database_url, user_id)
            if found is None or found[0] < version:  # not ready, or an older row than the event
                PRECOMPUTE.labels("no_profile").inc()
                return 0
            stored_version, structured, summary = found
            if self.settings.EXPLAINER_PRECOMPUTE_RERANK:
                self.precompute_rerank(user_id=user_id, version=stored_version, summary=summary)
            r = httpx.post(f"{self.settings.RETRIEVER_URL}/v1/candidates",
                           json={"user_id": user_id, "k": self.settings.EXPLAINER_PRECOMPUTE_K,
                                 "strategy": "hybrid"}, timeout=10.0)
            r.raise_for_status()
            items = [ItemFacts.model_validate(i) for i in r.json().get("items") or []]
            if not items:
                PRECOMPUTE.labels("no_items").inc()
                return 0
            cached = self.cache.get_many(user_id=user_id, profile_version=stored_version,
                                         model_name=self.reasoner.name, asins=[i.parent_asin for i in items])
            todo = [i for i in items if i.parent_asin not in cached]
            if not todo:
                PRECOMPUTE.labels("cached").inc()
                return 0
            terms = profile_terms(ProfileIn.model_validate(structured), summary)
            queued = self.in_background(user_id=user_id, profile_version=stored_version, terms=terms, items=todo,
                                        priority=PRECOMPUTED)
            PRECOMPUTE.labels("queued" if queued else "dropped").inc()
            return queued
        except Exception as e:
            PRECOMPUTE.labels("error").inc()
            log.warning("reason precompute failed", extra={"user_id": user_id, "error": str(e)[:300]})
            return 0

    def handle_profile_events(self, records: Any) -> None:
        """The profiles.v1 handler: note every ready profile for the precompute thread (fast, never
        raises: a batch is handled well within the consumer's poll interval)."""
        from shared.events import ProfileEvent
        from shared.kafka import decode_value

        for rec in records:
            try:
                ev = ProfileEvent.model_validate(decode_value(rec))
            except ValueError:
                continue
            if ev.status == "ready":
                self.note_profile(user_id=ev.user_id, version=ev.version)

    def note_profile(self, *, user_id: str, version: int) -> bool:
        """Queue a ready profile for :meth:`precompute` on the precompute thread (a user waits once,
        with the newest version); False when the queue is full (precomputing is an optimisation)."""
        if not self.llm_enabled:
            return False
        with self._profiles_cv:
            if self._closed:
                return False
            if user_id not in self._profiles and len(self._profiles) >= self.settings.EXPLAINER_BACKGROUND_QUEUE:
                PRECOMPUTE.labels("dropped").inc()
                return False
            self._profiles[user_id] = max(version, self._profiles.get(user_id, 0))
            self._profiles_cv.notify()
            if self._precomputer is None:
                self._precomputer = threading.Thread(target=self._precompute_loop, name="explainer-precompute",
                                                     daemon=True)
                self._precomputer.start()
        return True

    def _precompute_loop(self) -> None:
        while True:
            with self._profiles_cv:
                while not self._profiles and not self._closed:
                    self._profiles_cv.wait()
                if self._closed:
                    return
                user_id = next(iter(self._profiles))
                version = self._profiles.pop(user_id)
            self.precompute(user_id=user_id, version=version)

    @property
    def profiles_waiting(self) -> int:
        with self._profiles_cv:
            return len(self._profiles)

    @property
    def background_jobs(self) -> int:
        with self._background_lock:
            return len(self._background)

    @property
    def background_reranks(self) -> int:
        with self._background_lock:
            return len(self._rerank_jobs)

    # ------------------------------------------------------------------ llm_only re-rank

    def rerank_key(self, *, user_id: str | None, profile_version: int, catalog_version: str | None,
                   summary: str | None, candidates: Sequence[Any]) -> RerankKey:
        """(user, profile version, catalog version, model). Without a catalog version, the candidates'
        own fingerprint stands for it; a request without a user is keyed by its summary."""
        model = self.backend_name
        if catalog_version is None:
            catalog_version = "asins:" + _digest("\n".join(c.parent_asin for c in candidates))
        uid = user_id or f"{ANONYMOUS}:{_digest(summary or '')}"
        return (uid, profile_version, catalog_version, model)

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        """mode=auto (the default): the stored re-rank for (user, profile version, catalog version,
        model), or at once the retriever order with template reasons while the LLM worker writes it
        (``rerank="pending"``). mode=inline (or EXPLAINER_INLINE_LLM): the LLM runs in this request,
        when this process holds the model (with the explainer worker, inline is served as auto)."""
        cands = req.candidates
        k = min(req.k, len(cands))
        if not self.llm_enabled or k == 0:
            RERANKS.labels("template").inc()
            return self._ranked(req, assemble([], n_candidates=len(cands), k=k), parsed=0, method="none",
                                status="none")
        key = self.rerank_key(user_id=req.user_id, profile_version=req.profile_version,
                              catalog_version=req.catalog_version, summary=req.summary, candidates=cands)
        if (req.mode == "auto" and not self.settings.EXPLAINER_INLINE_LLM) or self.reasoner is None:
            stored, read = self.reranks.in_memory(key)
            if read:
                stored = await run_read(self.reranks.database_url or "", self.reranks.get, key)
            if stored is not None:
                if self.remote is not None:
                    self.remote.forget(key)
                rows, parsed = stored_rows(stored["items"], cands, k, method=stored["method"])
                RERANKS.labels("stored").inc()
                return self._ranked(req, rows, parsed=parsed, method=stored["method"], status="stored")
            if req.queue:
                self.rerank_in_background(key, summary=req.summary, candidates=cands, k=req.k,
                                          priority=REQUESTED)
            RERANKS.labels("pending").inc()
            return self._ranked(req, assemble([], n_candidates=len(cands), k=k), parsed=0, method="none",
                                status="pending")
        budget = self.settings.EXPLAINER_RERANK_TIMEOUT_S
        try:
            ranked, method, outcome = await asyncio.wait_for(
                self._in_llm_thread(self._llm_rank, summary=req.summary, candidates=cands, k=k,
                                    deadline=time.monotonic() + budget, user_id=req.user_id),
                timeout=budget,
            )
        except TimeoutError:
            LLM_TIMEOUTS.labels("rerank").inc()
            ranked, method, outcome = [], "none", "timeout"
        RERANKS.labels(outcome).inc()
        if ranked:
            await asyncio.to_thread(self.reranks.put, key, items=ranked, method=method, parsed=len(ranked))
        rows, parsed = stored_rows(ranked, cands, k, method=method)
        return self._ranked(req, rows, parsed=parsed, method=method if ranked else "none", status="inline")

    def _llm_rank(self, *, summary: str | None, candidates: Sequence[Any], k: int, deadline: float,
                  user_id: str | None) -> tuple[list[dict[str, Any]], str, str]:
        """On the LLM thread: the ranks the model gave, best first (``[{"parent_asin", "rank",
        "reason"}]``; label scoring ranks every candidate), the method and the outcome. Never raises."""
        assert self.reasoner is not None
        try:
            if self.reasoner.can_score:  # one forward pass, candidates ranked by their label's logit
                prompt, labels = label_prompt(summary=summary, candidates=candidates)
                scores = self.reasoner.score(prompt, labels, system=RERANK_SYSTEM, answer_prefix=ANSWER_PREFIX,
                                             deadline=deadline)
                if scores is None or len(scores) != len(labels):
                    LLM_TIMEOUTS.labels("rerank").inc()
                    return [], "label_logits", "timeout"
                rows = rank_by_scores(scores, n_candidates=len(labels), k=len(labels))
                outcome, method = "scored", "label_logits"
            else:
                raw = self.reasoner.complete(rerank_prompt(summary=summary, candidates=candidates, k=k),
                                             max_new_tokens=min(400, 40 * k + 20), system=RERANK_SYSTEM,
                                             deadline=deadline)
                parsed = parse_ranking(raw, candidates=candidates, k=k,
                                       max_reason_chars=self.settings.EXPLAINER_MAX_REASON_CHARS)
                rows = [(p.rank, p.index, p.reason) for p in sorted(parsed, key=lambda p: p.rank)]
                method = "text"
                outcome = "parsed" if len(rows) == k else ("partial" if rows else "unparsed")
                if len(rows) < k:
                    log.info("rerank output incomplete",
                             extra={"user_id": user_id, "parsed": len(rows), "k": k, "output": raw[:300]})
        except Exception:
            log.exception("llm rerank failed", extra={"user_id": user_id})
            return [], "none", "error"
        ranked = [{"parent_asin": candidates[index].parent_asin, "rank": rank, "reason": reason}
                  for rank, index, reason in rows]
        return ranked, method, outcome

    def rerank_in_background(self, key: RerankKey, *, summary: str | None, candidates: Sequence[Any], k: int,
                             priority: int) -> bool:
        """Queue the re-rank of ``candidates`` on the LLM thread (stored under ``key``); False when it
        is not queued (no LLM, the queue is full, shutting down). Already queued counts as queued."""
        if not self.llm_enabled or not candidates:
            return False
        if self.remote is not None:
            return self.remote.rerank(priority=priority, key=key, summary=summary, candidates=candidates,
                                      k=min(k, len(candidates)))
        with self._background_lock:
            if key not in self._rerank_jobs and self._queue_full():
                BACKGROUND_RERANKS.labels("dropped").inc()
                return False
            if not self._rerank_jobs.claim(key, priority):
                return True  # already on its way, at this priority or better
        BACKGROUND_RERANKS.labels("queued").inc()
        try:
            self._llm_pool.submit_at(priority, self._write_rerank, key, summary, list(candidates),
                                     min(k, len(candidates)))
        except RuntimeError:  # shutting down
            with self._background_lock:
                self._rerank_jobs.release(key)
            return False
        return True

    def _write_rerank(self, key: RerankKey, summary: str | None, candidates: list[Any], k: int) -> None:
        try:
            if self.reranks.get(key) is not None:  # queued twice: the other job stored it
                BACKGROUND_RERANKS.labels("stored_already").inc()
                return
            deadline = time.monotonic() + self.settings.EXPLAINER_BACKGROUND_BUDGET_S
            ranked, method, outcome = self._llm_rank(summary=summary, candidates=candidates, k=k,
                                                     deadline=deadline, user_id=key[0])
            RERANKS.labels(outcome).inc()
            if ranked:
                self.reranks.put(key, items=ranked, method=method, parsed=len(ranked))
            BACKGROUND_RERANKS.labels("done" if ranked else "empty").inc()
        except Exception:
            BACKGROUND_RERANKS.labels("failed").inc()
            log.exception("background re-rank failed", extra={"user_id": key[0]})
        finally:
            with self._background_lock:
                self._rerank_jobs.release(key)

    def precompute_rerank(self, *, user_id: str, version: int, summary: str) -> bool:
        """A ready profile: queue the llm_only re-rank of the user's current llm_only candidates (asked of
        the retriever like the gateway does) unless it is stored. Never raises."""
        import httpx

        from services.explainer.schemas import ItemFacts

        if self.reasoner is None:
            return False
        try:
            r = httpx.post(f"{self.settings.RETRIEVER_URL}/v1/candidates",
                           json={"user_id": user_id, "profile_text": summary or None, "strategy": "llm_only",
                                 "k": self.settings.EXPLAINER_RERANK_CANDIDATES, "profile_version": version},
                           timeout=10.0)
            r.raise_for_status()
            body = r.json()
            cands = [ItemFacts.model_validate(i) for i in body.get("items") or []]
            if not cands:
                return False
            key = self.rerank_key(user_id=user_id, profile_version=version,
                                  catalog_version=body.get("index_version"), summary=summary, candidates=cands)
            if self.reranks.get(key) is not None:
                return False
            return self.rerank_in_background(key, summary=summary, candidates=cands, k=5, priority=PRECOMPUTED)
        except Exception as e:
            log.warning("re-rank precompute failed", extra={"user_id": user_id, "error": str(e)[:300]})
            return False

    def _ranked(self, req: RerankRequest, rows: list[tuple[int, int, str | None]], *, parsed: int, method: str,
                status: str) -> RerankResponse:
        """The answer: ``rows`` (rank, candidate index, LLM reason or None) with template reasons where
        the model gave none or repeated itself."""
        cands = req.candidates
        filled = fill_reasons(
            user_id=req.user_id,
            profile=None,
            summary=req.summary,
            items=[cands[index] for _, index, _ in rows],
            given=[(r, "llm") if r else None for _, _, r in rows],
        )
        items = []
        for (rank, index, _), (reason, source) in zip(rows, filled, strict=True):
            items.append(RankedItem(parent_asin=cands[index].parent_asin, rank=rank, reason=reason, source=source))
            REASONS.labels(source).inc()
        k = min(req.k, len(cands))
        return RerankResponse(items=items, parsed=parsed, fallback=parsed < k, backend=self.backend_name,
                              method=method, rerank=status)


def stored_rows(ranked: Sequence[dict[str, Any]], candidates: Sequence[Any], k: int, *, method: str
                ) -> tuple[list[tuple[int, int, str | None]], int]:
    """(rank, candidate index, reason) for ranks 1..k from a re-rank (``[{"parent_asin", "rank",
    "reason"}]``) and how many of them came from it. Its items that are still candidates keep their
    order; a generated (text) re-rank also keeps its ranks, with holes filled in retriever order; a
    label-scored one ranks every candidate, so the ones it still has close up."""
    index = {c.parent_asin: i for i, c in enumerate(candidates)}
    parsed: list[ParsedRank] = []
    seen: set[int] = set()
    for row in sorted(ranked, key=lambda r: int(r.get("rank") or 0)):
        i = index.get(str(row.get("parent_asin")))
        rank = int(row.get("rank") or 0) if method == "text" else len(parsed) + 1
        if i is None or i in seen or not 1 <= rank <= k:
            continue
        parsed.append(ParsedRank(rank=rank, index=i, reason=row.get("reason")))
        seen.add(i)
    return assemble(parsed, n_candidates=len(candidates), k=k), len(parsed)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def readiness_info(explainer: Explainer | None) -> dict[str, Any]:
    """The model part of /readyz: which backend answers, and whether the LLM is loaded."""
    if explainer is None:
        return {"ok": False, "error": "not started"}
    return {
        "ok": True,
        "backend": explainer.backend_name,
        "llm_loaded": explainer.reasoner is not None,
        # the LLM runs in the explainer worker (Celery queues), this process only serves what it stored
        "llm_worker": explainer.remote is not None,
        "template_model": TEMPLATE_MODEL,
        "inline_llm": explainer.settings.EXPLAINER_INLINE_LLM,
        "background_jobs": explainer.background_jobs,
        "background_reranks": explainer.background_reranks,
        "profiles_waiting": explainer.profiles_waiting,
    }
