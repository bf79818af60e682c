"""Gateway orchestration: profile + history from the DB, candidates from retriever/ALS, reasons from the
explainer; merge, de-duplicate, fill, and fall back on every dependency failure.

Fallback ladder (each step sets ``degraded`` and adds a note):
* explainer slow/down → template reasons generated here (``shared.reasons``, the code the explainer runs);
* retriever down → ALS top-N for a known user, else popular items straight from the DB;
* ALS without a model or without the user (strategy=als) → the hybrid path;
* llm_only re-rank fails → retriever order with template reasons.
An unknown user gets a cold-start answer; only a database outage *and* a retriever outage together leave
nothing to recommend (503).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import astuple, dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from services.gateway import store
from services.gateway.clients import DependencyError, ServiceClients, note_timing
from services.gateway.config import GatewaySettings
from services.gateway.precompute import Job, Precomputer, jobs_for
from services.gateway.schemas import GatewayStrategy, ReasonsBackend
from shared.db import run_read
from shared.http import DomainError
from shared.logging import get_logger
from shared.lru import TtlLru
from shared.metrics import LATENCY_BUCKETS
from shared.reasons import fill_reasons

log = get_logger(__name__)

AlsResult = tuple[list[dict[str, Any]] | None, DependencyError | None]

REQUEST_LATENCY = Histogram(
    "recsys_gateway_recommendation_seconds",
    "Recommendation latency per strategy",
    ["strategy", "degraded"],
    buckets=LATENCY_BUCKETS,
)
FALLBACKS = Counter("recsys_gateway_fallbacks_total", "Fallbacks taken", ["strategy", "reason"])
CACHE = Counter("recsys_gateway_answer_cache_total", "Answer cache lookups", ["result"])


@dataclass
class Plan:
    """What one request accumulates while it runs."""

    strategy: str
    k: int
    items: list[dict[str, Any]] = field(default_factory=list)  # facts + score + source (+ reason)
    degraded: bool = False
    notes: list[str] = field(default_factory=list)
    retriever_cold: bool | None = None
    index_version: str | None = None  # the retriever's index the candidates came from
    rerank: str | None = None  # llm_only: stored | pending | inline | none
    fresh: bool = False  # the caller sent Cache-Control: no-cache: the retriever computes, too
    ahead: bool = False  # computed ahead of any request: the explainer queues no LLM work for it

    def fallback(self, reason: str) -> None:
        """A dependency failed or timed out: another path answers, and the answer says degraded."""
        self.degraded = True
        self.notes.append(reason)
        FALLBACKS.labels(self.strategy, reason.split(":", 1)[0]).inc()

    def note(self, reason: str) -> None:
        """Another path answers although nothing failed (ALS does not know a cold user): noted, not
        degraded."""
        self.notes.append(reason)
        FALLBACKS.labels(self.strategy, reason.split(":", 1)[0]).inc()

    def add(self, items: list[dict[str, Any]], *, exclude: set[str], source: str | None = None) -> None:
        have = {i["parent_asin"] for i in self.items}
        for it in items:
            asin = it.get("parent_asin")
            if not asin or asin in have or asin in exclude:
                continue
            row = dict(it)
            if source:
                row["source"] = source
            row.setdefault("source", self.strategy)
            self.items.append(row)
            have.add(asin)


class AnswerCache:
    """Recent answers (LRU); an entry is valid only for the user stamp it was built with. It is fresh
    for ``ttl_s`` (or the shorter TTL its put gave), then stale for ``stale_s`` more: a stale answer is
    served while it is recomputed behind the request (``precompute.py``). A promoted model makes every
    entry stale at once (``mark_stale``)."""

    def __init__(self, *, ttl_s: float, stale_s: float, size: int) -> None:
        self.ttl_s, self.stale_s = ttl_s, stale_s
        # key -> (stamp, answer, fresh until, generation)
        self._lru: TtlLru[tuple[Any, ...], tuple[str, dict[str, Any], float, int]] = TtlLru(
            ttl_s=ttl_s + stale_s, size=size)
        self._generation = 0

    def get(self, key: tuple[Any, ...], stamp: str) -> tuple[dict[str, Any] | None, str]:
        """(answer, "hit" | "stale" | "miss")."""
        found = self._lru.get(key)
        if found is None or found[0] != stamp:
            CACHE.labels("miss").inc()
            return None, "miss"
        _, answer, fresh_until, generation = found
        state = "hit" if generation == self._generation and time.monotonic() <= fresh_until else "stale"
        CACHE.labels(state).inc()
        return answer, state

    def put(self, key: tuple[Any, ...], stamp: str, answer: dict[str, Any], *, ttl_s: float | None = None) -> None:
        fresh = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if fresh <= 0:
            return
        self._lru.put(key, (stamp, answer, time.monotonic() + fresh, self._generation), ttl_s=fresh + self.stale_s)

    def mark_stale(self) -> None:
        self._generation += 1

    def keys(self) -> list[tuple[Any, ...]]:
        return self._lru.keys()


class FactsCache:
    """Item display facts read a moment ago (``ttl_s``), so the als strategy's answers need no read of
    their own for items just shown; LRU of ``size`` items."""

    def __init__(self, *, ttl_s: float, size: int) -> None:
        self._lru: TtlLru[str, dict[str, Any]] = TtlLru(ttl_s=ttl_s, size=size)

    def get_many(self, asins: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """(facts found fresh, asins still to read)."""
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for asin in asins:
            hit = self._lru.get(asin)
            if hit is not None:
                found[asin] = hit
            else:
                missing.append(asin)
        return found, missing

    def put_many(self, facts: dict[str, dict[str, Any]]) -> None:
        for asin, f in facts.items():
            self._lru.put(asin, f)


class Recommender:
    def __init__(self, *, settings: GatewaySettings, clients: ServiceClients) -> None:
        self.settings = settings
        self.clients = clients
        self.db_url = settings.database_url
        self.facts = FactsCache(ttl_s=settings.GATEWAY_CACHE_TTL_S, size=settings.GATEWAY_CACHE_SIZE)
        self.cache = (
            AnswerCache(ttl_s=settings.GATEWAY_CACHE_TTL_S, stale_s=settings.GATEWAY_CACHE_STALE_S,
                        size=settings.GATEWAY_CACHE_SIZE)
            if settings.GATEWAY_CACHE_TTL_S > 0
            else None
        )
        self.in_flight = 0  # requests being answered (precomputing waits for them)
        # computes answers ahead of requests and refreshes stale ones behind them (precompute.py)
        self.precomputer: Precomputer | None = (
            Precomputer(compute=self._precompute, busy=lambda: self.in_flight > 0,
                        wait_s=settings.GATEWAY_PRECOMPUTE_WAIT_S, max_queued=settings.GATEWAY_CACHE_SIZE)
            if self.cache is not None else None
        )

    # ------------------------------------------------------------------ ahead of requests

    def precompute_jobs(self, user_ids: list[str]) -> list[Job]:
        """The default answers of these users (``GATEWAY_PRECOMPUTE_*``)."""
        return jobs_for(user_ids, strategies=self.settings.GATEWAY_PRECOMPUTE_STRATEGIES,
                        k=self.settings.GATEWAY_PRECOMPUTE_K, backend=self.settings.GATEWAY_REASONS)

    def on_events(self, user_ids: list[str], promoted: bool) -> None:
        """profiles.v1 / models.v1 (on the event loop): compute the users' answers ahead; a promoted
        model makes every answer stale and recomputes the remembered ones."""
        if self.precomputer is None or self.cache is None:
            return
        if user_ids:
            self.precomputer.ask(self.precompute_jobs(user_ids), trigger="profile", ahead=True)
        if promoted:
            # every answer is stale now and is recomputed when next asked; computed at once are only the
            # remembered users' defaults that are missing (a missing model left them degraded, unstored),
            # so a promotion costs nothing up front for the answers that exist
            self.cache.mark_stale()
            keys = self.cache.keys()
            have = set(keys)
            jobs = [j for j in self.precompute_jobs([key[0] for key in keys]) if astuple(j) not in have]
            self.precomputer.ask(jobs, trigger="model", ahead=True)

    def on_llm_writes(self, user_ids: set[str]) -> None:
        """The LLM worker wrote reasons or a re-rank for these users: their cached answers are
        recomputed (the LLM work is done, so nothing more is queued)."""
        if self.precomputer is None or self.cache is None:
            return
        jobs = [Job(*key) for key in self.cache.keys() if key[0] in user_ids]
        self.precomputer.ask(jobs, trigger="llm", ahead=True)

    async def llm_writes(self, marks: Any) -> tuple[set[str], Any]:
        return await run_read(self.db_url, store.llm_writes_since, self.db_url, marks)

    async def _precompute(self, job: Job, ahead: bool) -> dict[str, Any]:
        return await self.recommend(user_id=job.user_id, k=job.k, strategy=job.strategy,  # type: ignore[arg-type]
                                    reasons=job.backend, refresh=True, ahead=ahead)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ public

    async def recommend(
        self,
        *,
        user_id: str,
        k: int,
        strategy: GatewayStrategy,
        reasons: ReasonsBackend | None = None,
        use_cache: bool = True,
        info: dict[str, str] | None = None,
        refresh: bool = False,
        ahead: bool = False,
    ) -> dict[str, Any]:
        """The answer; ``info["cache"]`` (when given) says hit, stale, miss or bypass.

        ``refresh``: compute without reading the cache and store the answer (the precomputer's jobs: not
        timed as requests, not counted in flight); ``ahead``: no request asked for it (the explainer
        queues no LLM work for it)."""
        if refresh:
            return await self._answer(user_id=user_id, k=k, strategy=strategy, reasons=reasons, use_cache=True,
                                      info=info, refresh=True, ahead=ahead)
        self.in_flight += 1
        try:
            return await self._answer(user_id=user_id, k=k, strategy=strategy, reasons=reasons,
                                      use_cache=use_cache, info=info)
        finally:
            self.in_flight -= 1

    async def _answer(
        self,
        *,
        user_id: str,
        k: int,
        strategy: GatewayStrategy,
        reasons: ReasonsBackend | None,
        use_cache: bool,
        info: dict[str, str] | None,
        refresh: bool = False,
        ahead: bool = False,
    ) -> dict[str, Any]:
        info = info if info is not None else {}
        start = time.perf_counter()
        plan = Plan(strategy=strategy, k=k, fresh=not use_cache, ahead=ahead)
        backend = reasons or self.settings.GATEWAY_REASONS
        # hybrid: the retriever blends the user's ALS top-N itself (one hop, not two); the gateway
        # calls the ALS service for strategy=als, and for hybrid only when the retriever is down.
        n_als = k + 50 if strategy == "als" else 0
        use_cache = use_cache and self.cache is not None
        # ALS needs nothing from the DB read: without the cache both run at once; with it, the read
        # (which decides whether the cached answer is still valid) goes first, so a hit costs no ALS call.
        als_task = asyncio.create_task(self._als_items(user_id, n_als)) if n_als and not use_cache else None
        ctx = await self._user(user_id, plan)
        cache = self.cache if use_cache and ctx is not None else None
        # Cache-Control: no-cache skips the stored answer, and the answer it computes replaces it
        store = self.cache if ctx is not None else None
        key = (user_id, strategy, k, backend)
        info["cache"] = "bypass"
        if cache is not None and ctx is not None and not refresh:
            cached, info["cache"] = cache.get(key, ctx.stamp)
            if cached is not None:
                if info["cache"] == "stale" and self.precomputer is not None:
                    self.precomputer.ask([Job(*key)], trigger="stale", ahead=False)
                REQUEST_LATENCY.labels(strategy, "false").observe(time.perf_counter() - start)
                return cached
        if n_als and als_task is None:
            als_task = asyncio.create_task(self._als_items(user_id, n_als))
        exclude = set(ctx.history) if ctx else set()
        als_result: AlsResult = await als_task if als_task else (None, None)
        if strategy == "als":
            await self._als_strategy(user_id, ctx, plan, exclude, als_result)
        elif strategy == "llm_only":
            await self._llm_only(user_id, ctx, plan, exclude)
        elif strategy == "popular":
            await self._retrieve(user_id, ctx, plan, exclude, strategy="popular")
        else:
            await self._hybrid(user_id, ctx, plan, exclude)
        if len(plan.items) < k:
            await self._fill_popular(user_id, plan, exclude)
        plan.items = plan.items[:k]
        if not plan.items and ctx is None:
            raise DomainError(
                "no recommendations: the database and the retriever are both unavailable",
                code="unavailable",
                status_code=503,
            )
        await self._reasons(user_id, ctx, plan, backend=backend)
        cold = _cold_start(ctx, plan)
        if not refresh:
            REQUEST_LATENCY.labels(strategy, str(plan.degraded).lower()).observe(time.perf_counter() - start)
        answer = {
            "user_id": user_id,
            "strategy": strategy,
            "cold_start": cold,
            "degraded": plan.degraded,
            "items": [
                {
                    "parent_asin": i["parent_asin"],
                    "title": i.get("title") or "",
                    "score": _float(i.get("score")),
                    "average_rating": i.get("average_rating"),
                    "reason": i.get("reason") or "",
                    "source": i.get("source") or strategy,
                    "channel": i.get("channel"),
                    "reason_source": i.get("reason_source", "template"),
                }
                for i in plan.items
            ],
            "notes": plan.notes,
            "rerank": plan.rerank,
        }
        # a pending re-rank is fresh only GATEWAY_PENDING_TTL_S: after it, a request gets it once more while
        # it is recomputed, and the stored re-rank from then on
        # a user with reviews answered as a cold one: the retriever did not know their items yet (its
        # index still loading); not kept, so the next request asks again
        provisional = bool(plan.retriever_cold) and ctx is not None and ctx.n_reviews > 0
        if store is not None and ctx is not None and not plan.degraded and not provisional:
            pending = plan.rerank == "pending"
            store.put(key, ctx.stamp, answer, ttl_s=self.settings.GATEWAY_PENDING_TTL_S if pending else None)
        return answer

    async def profile(self, *, user_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(store.get_profile, self.db_url, user_id=user_id)

    # ------------------------------------------------------------------ steps

    async def _user(self, user_id: str, plan: Plan) -> store.UserRecord | None:
        started = time.perf_counter()
        try:
            return await run_read(
                self.db_url,
                store.load_user,
                self.db_url,
                user_id=user_id,
                history_limit=self.settings.GATEWAY_HISTORY_LIMIT,
            )
        except Exception:
            log.exception("profile read failed", extra={"user_id": user_id})
            plan.fallback("db:unavailable")
            return None
        finally:
            note_timing("db-user", time.perf_counter() - started)

    def _retriever_body(
        self,
        user_id: str,
        ctx: store.UserRecord | None,
        *,
        strategy: str,
        k: int,
        exclude: set[str],
    ) -> dict[str, Any]:
        # no als_candidates: for hybrid the retriever reads the user's live ALS top-N itself. The
        # history and profile version just read spare the retriever the same two reads; the history
        # goes only when it holds the user's RETRIEVER_HISTORY_MAX most recent reviews (else the
        # retriever reads them).
        body: dict[str, Any] = {
            "user_id": user_id,
            "profile_text": ctx.summary if ctx else None,
            "strategy": strategy,
            "k": k,
            "exclude": sorted(exclude),
        }
        if ctx is not None and user_id:
            body["profile_version"] = ctx.profile_version
            limit, read = self.settings.RETRIEVER_HISTORY_MAX, self.settings.GATEWAY_HISTORY_LIMIT
            if self.settings.GATEWAY_SEND_HISTORY and (read >= limit or len(ctx.reviews) < read):
                body["history"] = [
                    {"parent_asin": a, "rating": r, "timestamp": t} for a, r, t in ctx.reviews[:limit]
                ]
        return body

    async def _retrieve(
        self,
        user_id: str,
        ctx: store.UserRecord | None,
        plan: Plan,
        exclude: set[str],
        *,
        strategy: str,
        k: int | None = None,
    ) -> bool:
        try:
            body = self._retriever_body(user_id, ctx, strategy=strategy, k=k or plan.k, exclude=exclude)
            if plan.fresh:
                body["fresh"] = True
            resp = await self.clients.candidates(body)
        except DependencyError as e:
            log.warning("retriever failed", extra={"user_id": user_id, "strategy": strategy, "error": str(e)})
            plan.fallback(f"retriever:{e.kind}")
            return False
        plan.retriever_cold = bool(resp.get("cold_start"))
        plan.index_version = resp.get("index_version")
        plan.add(list(resp.get("items") or []), exclude=exclude)
        return True

    async def _als_items(
        self, user_id: str, k: int
    ) -> tuple[list[dict[str, Any]] | None, DependencyError | None]:
        try:
            resp = await self.clients.als_recommendations(user_id, k)
        except DependencyError as e:
            return None, e
        return [
            {"parent_asin": i["parent_asin"], "score": i.get("score")}
            for i in resp.get("items") or []
            if i.get("parent_asin")
        ], None

    async def _hybrid(
        self,
        user_id: str,
        ctx: store.UserRecord | None,
        plan: Plan,
        exclude: set[str],
        als_result: AlsResult | None = None,
    ) -> None:
        """The retriever's hybrid list (ALS blended in there); retriever down: the ALS top-N (fetched
        now unless ``als_result`` already holds it), facts from the DB, before plain popularity."""
        if await self._retrieve(user_id, ctx, plan, exclude, strategy="hybrid"):
            return
        if als_result is None:
            als_result = await self._als_items(user_id, plan.k + 50)
        als, err = als_result
        if als:
            await self._add_als(als, plan, exclude)
        elif err is not None and err.kind != "http":
            log.info("als unavailable for the hybrid fallback", extra={"user_id": user_id, "error": str(err)})

    async def _als_strategy(
        self,
        user_id: str,
        ctx: store.UserRecord | None,
        plan: Plan,
        exclude: set[str],
        als_result: AlsResult,
    ) -> None:
        als, err = als_result
        if als:
            await self._add_als(als, plan, exclude)
            if len(plan.items) >= plan.k:
                return
        reason = f"als:{err.code or err.kind}" if err else "als:too_few"
        if err is None or err.code == "user_not_in_model":
            plan.note(reason)  # the model does not know the user (yet), or lists too few: not a failure
        else:
            plan.fallback(reason)
        await self._hybrid(user_id, ctx, plan, exclude, (None, err))

    async def _llm_only(
        self, user_id: str, ctx: store.UserRecord | None, plan: Plan, exclude: set[str]
    ) -> None:
        pool = Plan(strategy="llm_only", k=self.settings.GATEWAY_LLM_ONLY_CANDIDATES)
        ok = await self._retrieve(user_id, ctx, pool, exclude, strategy="llm_only", k=pool.k)
        plan.retriever_cold = pool.retriever_cold
        if not ok:
            plan.degraded, plan.notes = True, plan.notes + pool.notes
            return
        candidates = pool.items
        if pool.retriever_cold or not (ctx and ctx.summary):
            # no summary to re-rank against (a cold user gets the popular candidates): the retriever
            # order, reasons from the templates; nothing to queue for the LLM
            plan.rerank = "none"
            plan.add(candidates[: plan.k], exclude=exclude)
            return
        # the explainer answers at once: the re-rank its LLM worker stored for this user, profile
        # version and index version, or the matching order while it is queued (rerank=pending)
        body = {
            "user_id": user_id,
            "summary": ctx.summary if ctx else None,
            "k": plan.k,
            "candidates": [_facts(c) for c in candidates],
            "profile_version": ctx.profile_version if ctx else 0,
            "catalog_version": pool.index_version,
            "queue": not plan.ahead,  # computed ahead: the profile's own precompute queues the re-rank
        }
        try:
            resp = await self.clients.rerank(body)
        except DependencyError as e:
            log.warning("rerank failed", extra={"user_id": user_id, "error": str(e)})
            plan.fallback(f"rerank:{e.kind}")
            plan.rerank = "none"
            plan.add(candidates[: plan.k], exclude=exclude)
            return
        plan.rerank = resp.get("rerank") or "none"
        by_asin = {c["parent_asin"]: c for c in candidates}
        ranked = []
        for r in sorted(resp.get("items") or [], key=lambda r: r.get("rank", 0)):
            cand = by_asin.get(r.get("parent_asin"))
            if cand is None:
                continue
            ranked.append(
                {
                    **cand,
                    "source": "llm_only",
                    "reason": r.get("reason"),
                    "reason_source": r.get("source", "llm"),
                    "score": cand.get("score"),
                }
            )
        if plan.rerank == "pending":
            plan.notes.append("rerank:pending")
        elif resp.get("fallback") and plan.rerank != "none":
            plan.notes.append(f"rerank:parsed {resp.get('parsed', 0)}/{plan.k}")
        plan.add(ranked, exclude=exclude)

    async def _fill_popular(self, user_id: str, plan: Plan, exclude: set[str]) -> None:
        need = plan.k - len(plan.items)
        taken = exclude | {i["parent_asin"] for i in plan.items}
        if plan.strategy != "popular" and "retriever:" not in " ".join(plan.notes):
            try:
                resp = await self.clients.candidates(
                    {
                        "user_id": None,
                        "profile_text": None,
                        "strategy": "popular",
                        "k": need + len(taken),
                        "exclude": sorted(exclude),
                        "als_candidates": None,
                    }
                )
                plan.add(list(resp.get("items") or []), exclude=taken, source="popular")
                if len(plan.items) >= plan.k:
                    return
            except DependencyError as e:
                plan.fallback(f"retriever:{e.kind}")
        try:
            rows = await asyncio.to_thread(
                store.popular_items,
                self.db_url,
                user_id=user_id if plan.strategy == "popular" else None,
                k=plan.k - len(plan.items),
                exclude=sorted(exclude | {i["parent_asin"] for i in plan.items}),
                tier=self.settings.RETRIEVER_COLD_TIER,
                prior_count=self.settings.RETRIEVER_BAYES_PRIOR_COUNT,
            )
        except Exception:
            log.exception("popular fallback from the DB failed", extra={"user_id": user_id})
            return
        plan.add(rows, exclude=exclude, source="popular")

    async def _add_als(self, als: list[dict[str, Any]], plan: Plan, exclude: set[str]) -> None:
        """ALS items with their facts from the DB: only what can be shown (unseen items, with a
        margin for rows missing in the DB)."""
        wanted = [r for r in als if r["parent_asin"] not in exclude][: 2 * plan.k]
        plan.add(await self._with_facts(wanted), exclude=exclude, source="als")

    async def _with_facts(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """ALS rows with their items' display facts: from memory when read within the answer cache's
        TTL (the same staleness the answers have), the rest in one read."""
        asins = [r["parent_asin"] for r in rows]
        facts, missing = self.facts.get_many(asins)
        if missing:
            try:
                read = await run_read(self.db_url, store.items_by_asin, self.db_url, missing)
                self.facts.put_many(read)
                facts |= read
            except Exception:
                log.exception("item facts read failed")
        return [
            {**facts.get(r["parent_asin"], {"parent_asin": r["parent_asin"]}), "score": r.get("score")}
            for r in rows
        ]

    async def _reasons(
        self, user_id: str, ctx: store.UserRecord | None, plan: Plan, *, backend: str
    ) -> None:
        todo = [i for i in plan.items if not i.get("reason")]
        if not todo:
            return
        profile = ctx.profile if ctx else None
        summary = ctx.summary if ctx else None
        taken = [i["reason"] for i in plan.items if i.get("reason")]
        given: list[tuple[str, str] | None] = [None] * len(todo)
        if backend != "template":
            # Template reasons are a pure function of (user, profile, items) (shared.reasons, the same
            # code the explainer runs), so the template backend is rendered here without a network hop.
            body = {
                "user_id": user_id,
                "profile": profile,
                "summary": summary,
                "profile_version": ctx.profile_version if ctx else 0,
                "items": [_facts(i) for i in todo],
                "backend": backend,
                "templates": False,  # only the LLM reasons: the templates are rendered below, once
                "queue": not plan.ahead,  # computed ahead of any request: no LLM work for lists nobody saw
            }
            try:
                resp = await self.clients.explain(body)
                by_asin = {e["parent_asin"]: e for e in resp.get("explanations") or []}
                if resp.get("degraded"):
                    plan.fallback("explainer:degraded")
                for n, item in enumerate(todo):
                    e = by_asin.get(item["parent_asin"])
                    if e and e.get("reason"):
                        given[n] = (e["reason"], e.get("source", "template"))
            except DependencyError as e:
                log.warning(
                    "explainer failed; local template reasons", extra={"user_id": user_id, "error": str(e)}
                )
                plan.fallback(f"explainer:{e.kind}")
        filled = fill_reasons(
            user_id=user_id,
            profile=profile,
            summary=summary,
            items=[_facts(i) for i in todo],
            given=given,
            taken=taken,
        )
        for item, (text, source) in zip(todo, filled, strict=True):
            item["reason"], item["reason_source"] = text, source


def _facts(item: dict[str, Any]) -> dict[str, Any]:
    feats = item.get("features") or []
    return {
        "parent_asin": item["parent_asin"],
        "title": item.get("title") or "",
        "features": [f for f in feats if isinstance(f, str)][:10],
        "average_rating": _rating(item.get("average_rating")),
        "rating_number": item.get("rating_number"),
        "main_category": item.get("main_category"),
    }


def _rating(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and 0 <= v <= 5 else None


def _float(v: Any) -> float | None:
    try:
        return round(float(v), 6) if v is not None else None
    except (TypeError, ValueError):
        return None


def _cold_start(ctx: store.UserRecord | None, plan: Plan) -> bool:
    if ctx is None:
        return bool(plan.retriever_cold)
    if ctx.has_profile:
        return False
    return ctx.n_reviews == 0 or ctx.profile_status == "cold_start" or bool(plan.retriever_cold)
