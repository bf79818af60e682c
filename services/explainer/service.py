"""Explainer domain logic: the LLM reasoner a deployment loads, reasons for a list of items, and the
llm_only re-rank.

The HTTP layer (app.py) only parses bodies and calls :class:`Explainer`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter

from services.explainer.config import ExplainerSettings
from services.explainer.llm import LLMReasoner
from services.explainer.rerank import (
    ANSWER_PREFIX,
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
from services.explainer.store import ReasonCache
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


class Explainer:
    def __init__(
        self, *, settings: ExplainerSettings, reasoner: LLMReasoner | None, cache: ReasonCache
    ) -> None:
        self.settings = settings
        self.reasoner = reasoner
        self.cache = cache
        # One thread owns the model: queued LLM work waits here, not in the default pool that the
        # cache's DB calls use, and a request past its deadline is dropped when its turn comes.
        self._llm_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explainer-llm")
        # background reason jobs queued or running: (user, profile version, model, asins)
        self._background: set[tuple[str, int, str, tuple[str, ...]]] = set()
        self._background_lock = threading.Lock()

    async def _in_llm_thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._llm_pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._llm_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def backend_name(self) -> str:
        return self.reasoner.name if self.reasoner else "template"

    async def explain(self, req: ExplainRequest) -> ExplainResponse:
        items = req.items
        terms = profile_terms(req.profile, req.summary)
        reasons: list[str | None] = [None] * len(items)
        degraded = False
        use_llm = self.reasoner is not None and req.backend != "template"
        # backend=auto never waits for the LLM (unless configured inline): what is cached now, the
        # rest as templates, and the missing LLM reasons written in the background for the next answer
        inline = req.backend == "llm" or self.settings.EXPLAINER_INLINE_LLM
        pending = 0
        if req.backend == "llm" and self.reasoner is None:
            degraded = True  # asked for the LLM, this deployment has none: say so
        if use_llm and items:
            assert self.reasoner is not None
            model = self.reasoner.name
            cached = await asyncio.to_thread(
                self.cache.get_many,
                user_id=req.user_id,
                profile_version=req.profile_version,
                model_name=model,
                asins=[i.parent_asin for i in items],
            )
            CACHE.labels("hit").inc(len(cached))
            CACHE.labels("miss").inc(len(items) - len(cached))
            todo = [i for i, it in enumerate(items) if it.parent_asin not in cached]
            for i, it in enumerate(items):
                reasons[i] = cached.get(it.parent_asin)
            if todo and not inline:
                pending = self.in_background(user_id=req.user_id, profile_version=req.profile_version,
                                             terms=terms, items=[items[i] for i in todo])
            elif todo:
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
        backend = self.backend_name if use_llm else "template"
        return ExplainResponse(explanations=out, backend=backend, degraded=degraded, pending=pending)

    def in_background(self, *, user_id: str | None, profile_version: int, terms: Any,
                      items: list[Any]) -> int:
        """Queue the LLM reasons of ``items`` for this user and profile version on the LLM thread (the
        result goes to the reason cache); returns how many items were queued (0: already queued, the
        queue is full, or there is no LLM)."""
        if self.reasoner is None or not items:
            return 0
        model = self.reasoner.name
        key = (user_id or "", profile_version, model, tuple(sorted(i.parent_asin for i in items)))
        with self._background_lock:
            if key in self._background:
                return len(items)  # already on its way
            if len(self._background) >= self.settings.EXPLAINER_BACKGROUND_QUEUE:
                BACKGROUND.labels("dropped").inc()
                return 0
            self._background.add(key)
        BACKGROUND.labels("queued").inc()
        try:
            self._llm_pool.submit(self._write_reasons, key, user_id, profile_version, terms, items)
        except RuntimeError:  # shutting down
            with self._background_lock:
                self._background.discard(key)
            return 0
        return len(items)

    def _write_reasons(self, key: tuple[str, int, str, tuple[str, ...]], user_id: str | None,
                       profile_version: int, terms: Any, items: list[Any]) -> None:
        """One background job, on the LLM thread: generate, keep the validated reasons, cache them."""
        assert self.reasoner is not None
        try:
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
                self._background.discard(key)

    def precompute(self, *, user_id: str, version: int) -> int:
        """A ready profile (``profiles.v1``): queue the LLM reasons of the user's current hybrid top
        items (asked of the retriever over HTTP, like any client) that the cache lacks. Returns the
        number of items queued. Errors are counted and logged: precomputing is an optimisation."""
        import httpx

        from services.explainer.schemas import ItemFacts, ProfileIn
        from services.explainer.store import profile_for_reasons

        if self.reasoner is None:
            return 0
        try:
            found = profile_for_reasons(self.settings.database_url, user_id)
            if found is None or found[0] < version:  # not ready, or an older row than the event
                PRECOMPUTE.labels("no_profile").inc()
                return 0
            stored_version, structured, summary = found
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
            queued = self.in_background(user_id=user_id, profile_version=stored_version, terms=terms, items=todo)
            PRECOMPUTE.labels("queued" if queued else "dropped").inc()
            return queued
        except Exception as e:
            PRECOMPUTE.labels("error").inc()
            log.warning("reason precompute failed", extra={"user_id": user_id, "error": str(e)[:300]})
            return 0

    def handle_profile_events(self, records: Any) -> None:
        """The profiles.v1 handler: precompute for every ready profile (never raises)."""
        from shared.events import ProfileEvent
        from shared.kafka import decode_value

        for rec in records:
            try:
                ev = ProfileEvent.model_validate(decode_value(rec))
            except ValueError:
                continue
            if ev.status == "ready":
                self.precompute(user_id=ev.user_id, version=ev.version)

    @property
    def background_jobs(self) -> int:
        with self._background_lock:
            return len(self._background)

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        cands = req.candidates
        k = min(req.k, len(cands))
        parsed_count = 0
        rows: list[tuple[int, int, str | None]]
        method = "none"
        if self.reasoner is None or k == 0:
            rows = assemble([], n_candidates=len(cands), k=k)
            outcome = "template"
        elif self.reasoner.can_score:  # one forward pass, candidates ranked by their label's logit
            prompt, labels = label_prompt(summary=req.summary, candidates=cands)
            try:
                scores = await asyncio.wait_for(
                    self._in_llm_thread(
                        self.reasoner.score,
                        prompt,
                        labels,
                        system=RERANK_SYSTEM,
                        answer_prefix=ANSWER_PREFIX,
                        deadline=time.monotonic() + self.settings.EXPLAINER_RERANK_TIMEOUT_S,
                    ),
                    timeout=self.settings.EXPLAINER_RERANK_TIMEOUT_S,
                )
                if scores is None or len(scores) != len(labels):
                    raise TimeoutError("the re-rank waited past its budget")
                rows = rank_by_scores(scores, n_candidates=len(cands), k=k)
                parsed_count, outcome, method = len(rows), "scored", "label_logits"
            except TimeoutError:
                LLM_TIMEOUTS.labels("rerank").inc()
                rows = assemble([], n_candidates=len(cands), k=k)
                outcome = "timeout"
            except Exception:
                log.exception("llm rerank failed", extra={"user_id": req.user_id})
                rows = assemble([], n_candidates=len(cands), k=k)
                outcome = "error"
        else:
            method = "text"
            prompt = rerank_prompt(summary=req.summary, candidates=cands, k=k)
            try:
                raw = await asyncio.wait_for(
                    self._in_llm_thread(
                        self.reasoner.complete,
                        prompt,
                        max_new_tokens=min(400, 40 * k + 20),
                        system=RERANK_SYSTEM,
                        deadline=time.monotonic() + self.settings.EXPLAINER_RERANK_TIMEOUT_S,
                    ),
                    timeout=self.settings.EXPLAINER_RERANK_TIMEOUT_S,
                )
                parsed = parse_ranking(
                    raw, candidates=cands, k=k, max_reason_chars=self.settings.EXPLAINER_MAX_REASON_CHARS
                )
                parsed_count = len(parsed)
                rows = assemble(parsed, n_candidates=len(cands), k=k)
                outcome = "parsed" if parsed_count == k else ("partial" if parsed_count else "unparsed")
                if parsed_count < k:
                    log.info(
                        "rerank output incomplete",
                        extra={"user_id": req.user_id, "parsed": parsed_count, "k": k, "output": raw[:300]},
                    )
            except TimeoutError:
                LLM_TIMEOUTS.labels("rerank").inc()
                rows = assemble([], n_candidates=len(cands), k=k)
                outcome = "timeout"
            except Exception:
                log.exception("llm rerank failed", extra={"user_id": req.user_id})
                rows = assemble([], n_candidates=len(cands), k=k)
                outcome = "error"
        RERANKS.labels(outcome).inc()
        # LLM reasons that repeat each other are replaced like missing ones.
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
        return RerankResponse(
            items=items, parsed=parsed_count, fallback=parsed_count < k, backend=self.backend_name, method=method
        )


def readiness_info(explainer: Explainer | None) -> dict[str, Any]:
    """The model part of /readyz: which backend answers, and whether the LLM is loaded."""
    if explainer is None:
        return {"ok": False, "error": "not started"}
    return {
        "ok": True,
        "backend": explainer.backend_name,
        "llm_loaded": explainer.reasoner is not None,
        "template_model": TEMPLATE_MODEL,
        "inline_llm": explainer.settings.EXPLAINER_INLINE_LLM,
        "background_jobs": explainer.background_jobs,
    }
