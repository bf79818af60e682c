"""LLM-only (the study's second pipeline): the profile summary -> two-stage semantic matching
(items rated >= 4.0 by >= 5 people; summary vs titles, top 300; summary vs title+features, top 50,
by the retriever) -> the LLM re-ranks those candidates and writes one reason per pick (explainer).

Without an LLM (``RECSYS_LLM_BACKEND=template``) the re-rank keeps the matching order and the
reasons are templates; the report says which model ran. A user without a usable summary is cold
start and gets the retriever's cold-start list.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy, StageClock, StrategyUnavailable, UserRecs


class LlmOnlyStrategy(OfflineStrategy):
    name = "llm_only"
    uses_profiles = True
    uses_retriever = True
    batch_size = 8

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}
        self.n_candidates = int(self.options.get("llm_candidates", 0))
        self.outcomes: dict[str, int] = {"parsed": 0, "partial": 0, "fallback": 0, "cold": 0}

    def fit(self, ctx: EvalContext) -> None:
        from tools.evaluation.explain import get_explainer
        from tools.evaluation.retrieval import get_retriever

        self.retriever = get_retriever(ctx)
        if not ctx.profiles:
            raise StrategyUnavailable("no user profiles were built (see notes)")
        self.n_candidates = self.n_candidates or int(self.retriever.params.llm_k)
        self.explainer = get_explainer(ctx, "auto")

    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        from services.explainer.schemas import ItemFacts, RerankRequest

        out = []
        # The summaries of the batch are embedded in one call (the service embeds each once and caches it).
        t0 = time.perf_counter()
        summaries = {u: p.summary for u in user_ids
                     if (p := ctx.profiles.get(u)) is not None and not p.cold and p.summary}
        matrix = ctx.encoder.encode(list(summaries.values()))
        vecs = dict(zip(summaries, matrix, strict=True))
        embed_s = (time.perf_counter() - t0) / max(1, len(user_ids))
        for user in user_ids:
            clock = StageClock()
            clock.seconds["match"] = embed_s
            summary = summaries.get(user)
            with clock.stage("match"):
                res = self.retriever.candidates(strategy="llm_only", user_id=user, profile_text=summary,
                                                profile_vector=vecs.get(user),
                                                k=self.n_candidates if summary else ctx.k,
                                                exclude=ctx.seen(user))
            items = [c.parent_asin for c in res.items]
            scores = [float(c.score) for c in res.items]
            reasons: list[str | None] | None = None
            cold = bool(res.cold_start) or not summary
            if not cold and items and summary:
                cards = [ItemFacts.model_validate({**ctx.catalog.card(a),
                                                   "title": ctx.catalog.title(a)[:5000]}) for a in items]
                t0 = time.perf_counter()
                resp = asyncio.run(self.explainer.rerank(RerankRequest(
                    user_id=user, summary=summary[:5000], candidates=cards, k=min(ctx.k, len(cards)),
                    mode="inline")))
                clock.seconds["rerank"] = time.perf_counter() - t0
                pos = {a: n for n, a in enumerate(items)}
                ranked = sorted(resp.items, key=lambda r: r.rank)
                items = [r.parent_asin for r in ranked]
                scores = [scores[pos[a]] for a in items]
                reasons = [r.reason for r in ranked]
                self.outcomes["parsed" if resp.parsed >= len(ranked) else "partial" if resp.parsed else
                              "fallback"] += 1
            else:
                items, scores = items[:ctx.k], scores[:ctx.k]
                self.outcomes["cold"] += 1
            stages = clock.per_user(1)
            stages["profile"] = ctx.profile_seconds_per_user.get(user, 0.0)
            out.append(UserRecs(user_id=user, items=items, scores=scores, cold=cold, reasons=reasons,
                                stage_seconds=stages))
        return out

    def describe(self) -> dict[str, Any]:
        backend = getattr(getattr(self, "explainer", None), "backend_name", None)
        return {"candidates_to_llm": self.n_candidates, "rerank_backend": backend,
                "rerank_outcomes": dict(self.outcomes)}
