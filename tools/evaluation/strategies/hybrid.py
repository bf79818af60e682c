"""Hybrid (the study's LLM-based pipeline): profile + history vector -> FAISS top N -> re-rank
(cosine to profile, minimum rating, MMR diversity) -> reasons (ad slogans) by the explainer.

All of it is the retriever's and explainer's library code. Cold start, as in the study: no usable
profile (a user with history but no profile still gets the history vector); a user with neither
gets the retriever's cold-start list (popular, per-user shuffled).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy, StageClock, StrategyUnavailable, UserRecs


class HybridStrategy(OfflineStrategy):
    name = "hybrid_study"
    uses_profiles = True
    uses_retriever = True
    explain_default = "auto"  # the study's ad slogans come from an LLM

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}

    def fit(self, ctx: EvalContext) -> None:
        from tools.evaluation.retrieval import get_retriever

        self.retriever = get_retriever(ctx)
        if not ctx.profiles:
            raise StrategyUnavailable("no user profiles were built (see notes)")

    def als_candidates(self, ctx: EvalContext, user_id: str) -> list[tuple[str, float]] | None:
        return None

    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        from tools.evaluation.retrieval import history_entries

        out = []
        for user in user_ids:
            clock = StageClock()
            prof = ctx.profiles.get(user)
            usable = prof is not None and not prof.cold
            with clock.stage("als"):
                als = self.als_candidates(ctx, user)
            with clock.stage("retrieve"):
                res = self.retriever.candidates(
                    strategy="hybrid", user_id=user, history=history_entries(ctx, user),
                    profile_text=prof.summary if usable and prof is not None else None,
                    profile_vector=prof.vector if usable and prof is not None else None,
                    k=ctx.k, exclude=ctx.seen(user), als_candidates=als)
            stages = clock.per_user(1)
            if not als:
                stages.pop("als", None)
            stages["profile"] = ctx.profile_seconds_per_user.get(user, 0.0)
            out.append(UserRecs(user_id=user, items=[c.parent_asin for c in res.items],
                                scores=[float(c.score) for c in res.items],
                                cold=bool(res.cold_start) or not usable,
                                stage_seconds=stages,
                                extra={"sources": [c.source for c in res.items]}))
        return out

    def describe(self) -> dict[str, Any]:
        return {"retriever": "services.retriever.offline.OfflineRetriever (hybrid)",
                "params": getattr(getattr(self, "retriever", None), "params", None).__repr__()}
