"""Popular: the served definition (``shared.popularity``), fitted on the training part only.

Items are ranked by Bayesian average (``item_stats``: metadata figures where the catalogue has them,
else the training reviews; ``rank_popular``), and each user gets ``pick_popular`` of that ranking: the
same per-user shuffle of the top tier and category round-robin the retriever serves on cold start.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.popularity import (
    DEFAULT_PRIOR_COUNT,
    global_mean,
    item_stats,
    pick_popular,
    rank_popular,
    review_aggregates,
)
from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy, StageClock, UserRecs


class PopularStrategy(OfflineStrategy):
    name = "popular"
    predicts_ratings = True
    personalized = False

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        self.prior_count = float((options or {}).get("prior_count", DEFAULT_PRIOR_COUNT))
        self.scores: dict[str, float] = {}
        self.ranked: list[dict[str, Any]] = []
        self.tier = 0
        self.prior_mean = 0.0

    def fit(self, ctx: EvalContext) -> None:
        items = list(ctx.catalog.items.values())
        # The prior mean is also the rating predicted for an item nobody rated.
        self.prior_mean = global_mean(items, review_aggregates(ctx.split.train))
        stats = item_stats(ctx.split.train, items, prior_count=self.prior_count, prior_mean=self.prior_mean)
        self.scores = {a: s.bayes_score for a, s in stats.items()}
        self.tier = ctx.settings.RETRIEVER_COLD_TIER
        self.ranked = rank_popular(
            {"parent_asin": a, "score": st.bayes_score, "rating_number": st.rating_number,
             "average_rating": st.average_rating, "main_category": self._category(ctx, a)}
            for a, st in stats.items()
        )

    @staticmethod
    def _category(ctx: EvalContext, asin: str) -> str | None:
        item = ctx.catalog.items.get(asin)
        return item.main_category if item is not None else None

    def describe(self) -> dict[str, Any]:
        return {"score": "Bayesian average rating, per-user shuffle of the top tier (shared.popularity)",
                "prior_count": self.prior_count, "prior_mean": round(self.prior_mean, 4), "tier": self.tier}

    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        out = []
        for user in user_ids:
            clock = StageClock()
            with clock.stage("rank"):
                top = [(p["parent_asin"], p["score"]) for p in
                       pick_popular(self.ranked, user_id=user, k=ctx.k, exclude=ctx.seen(user), tier=self.tier)]
                # Rating prediction: the item's shrunk mean (the prior mean for an item never rated).
                pairs = [(self.scores.get(t.parent_asin, self.prior_mean), t.rating)
                         for t in ctx.split.test.get(user, [])]
            out.append(UserRecs(user_id=user, items=[a for a, _ in top], scores=[s for _, s in top],
                                cold=ctx.split.is_cold(user), rating_pairs=pairs,
                                stage_seconds=clock.per_user(1)))
        return out
