"""Popular: every user gets the best Bayesian-average items they have not reviewed yet.

Uses the retriever's own scoring (``shared.popularity.item_stats``), fitted on the training part
only: metadata figures where the catalogue has them, else the training reviews.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.popularity import DEFAULT_PRIOR_COUNT, global_mean, item_stats, review_aggregates
from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import StageClock, Strategy, UserRecs, rank


class PopularStrategy(Strategy):
    name = "popular"
    predicts_ratings = True
    personalized = False

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        self.prior_count = float((options or {}).get("prior_count", DEFAULT_PRIOR_COUNT))
        self.scores: dict[str, float] = {}
        self.prior_mean = 0.0

    def fit(self, ctx: EvalContext) -> None:
        items = list(ctx.catalog.items.values())
        # The prior mean is also the rating predicted for an item nobody rated.
        self.prior_mean = global_mean(items, review_aggregates(ctx.split.train))
        stats = item_stats(ctx.split.train, items, prior_count=self.prior_count, prior_mean=self.prior_mean)
        self.scores = {a: s.bayes_score for a, s in stats.items()}

    def describe(self) -> dict[str, Any]:
        return {"score": "Bayesian average rating (shared.popularity)", "prior_count": self.prior_count,
                "prior_mean": round(self.prior_mean, 4)}

    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        out = []
        for user in user_ids:
            clock = StageClock()
            with clock.stage("rank"):
                top = rank(self.scores, ctx.k, exclude=ctx.seen(user))
                # Rating prediction: the item's shrunk mean (the prior mean for an item never rated).
                pairs = [(self.scores.get(t.parent_asin, self.prior_mean), t.rating)
                         for t in ctx.split.test.get(user, [])]
            out.append(UserRecs(user_id=user, items=[a for a, _ in top], scores=[s for _, s in top],
                                cold=ctx.split.is_cold(user), rating_pairs=pairs,
                                stage_seconds=clock.per_user(1)))
        return out
