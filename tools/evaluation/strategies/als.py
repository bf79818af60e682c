"""ALS (explicit and implicit) through the ALS service's own library code (``services.als.model``).

Hyper-parameters are chosen on the validation part (fit on ``tune_train``, score on
``validation``: RMSE for explicit, Recall@k for implicit) over a small grid, then the best setting is
refit on the whole training part for the test. Spark runs in local mode unless settings say
otherwise; a checkpoint directory is always set (``services.als.spark.get_spark``).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from shared.logging import get_logger
from tools.evaluation import metrics as M
from tools.evaluation.context import EvalContext
from tools.evaluation.split import Interaction
from tools.evaluation.strategies.base import OfflineStrategy, StageClock, StrategyUnavailable, UserRecs

log = get_logger(__name__)

EXPLICIT_GRID: dict[str, list[Any]] = {"rank": [8, 16], "regParam": [0.05, 0.2]}
IMPLICIT_GRID: dict[str, list[Any]] = {"rank": [8, 16], "alpha": [5.0, 20.0]}
BASE_PARAMS: dict[str, Any] = {"maxIter": 10, "checkpointInterval": 2}


def ratings_frame(interactions: Sequence[Interaction]) -> Any:
    import pandas as pd

    from services.als.data import clean_ratings

    return clean_ratings(pd.DataFrame(
        {"user_id": [i.user_id for i in interactions], "parent_asin": [i.parent_asin for i in interactions],
         "rating": [i.rating for i in interactions], "timestamp": [i.timestamp for i in interactions]}))


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


class _AlsStrategy(OfflineStrategy):
    implicit = False
    predicts_ratings = True

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        opts = options or {}
        default_grid = IMPLICIT_GRID if self.implicit else EXPLICIT_GRID
        self.grid = grid_points(opts.get("als_implicit_grid" if self.implicit else "als_grid", default_grid))
        self.base = {**BASE_PARAMS, **opts.get("als_base", {})}
        self.model: Any = None
        self.chosen: dict[str, Any] = {}
        self.validation: list[dict[str, Any]] = []

    def _params(self, ctx: EvalContext, point: dict[str, Any]) -> Any:
        from services.als.model import AlsParams

        return AlsParams.from_dict({**self.base, "seed": ctx.seed, **point, "implicit": self.implicit})

    def _score(self, ctx: EvalContext, model: Any) -> float | None:
        """Validation score: -RMSE (explicit) or Recall@k (implicit); higher is better."""
        val = ctx.split.validation
        if not val:
            return None
        if not self.implicit:
            users = [t.user_id for v in val.values() for t in v]
            items = [t.parent_asin for v in val.values() for t in v]
            truth = [t.rating for v in val.values() for t in v]
            err = M.rmse(zip(model.predict(users, items).tolist(), truth, strict=True))
            return None if err is None else -err
        return M.mean_or_none(
            M.recall_at_k([a for a, _ in model.recommend(u, ctx.k)], [t.parent_asin for t in v], ctx.k)
            for u, v in sorted(val.items()))

    def fit(self, ctx: EvalContext) -> None:
        try:
            from services.als.config import AlsSettings
            from services.als.model import fit
            from services.als.spark import get_spark
        except ImportError as e:
            raise StrategyUnavailable(f"ALS library not importable: {e}") from e
        spark = get_spark(ctx.service_settings(AlsSettings))
        best: tuple[float, dict[str, Any]] | None = None
        tune = ratings_frame(ctx.split.tune_train)
        if len(self.grid) > 1 and ctx.split.validation and len(tune):
            for point in self.grid:
                model = fit(tune, params=self._params(ctx, point), spark=spark)
                score = self._score(ctx, model)
                self.validation.append({**point, "score": score})
                if score is not None and (best is None or score > best[0]):
                    best = (score, point)
        self.chosen = best[1] if best else self.grid[0]
        train = ratings_frame(ctx.split.train)
        if not len(train):
            raise StrategyUnavailable("no training ratings")
        self.model = fit(train, params=self._params(ctx, self.chosen), spark=spark)
        # The blend reuses this model instead of fitting its own.
        ctx.cache[f"als_model:{'implicit' if self.implicit else 'explicit'}"] = self.model

    def describe(self) -> dict[str, Any]:
        metric = "recall@k" if self.implicit else "-rmse"
        return {"chosen": {**self.base, **self.chosen}, "validation_metric": metric,
                "validation": self.validation}

    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        out = []
        known = set(self.model.user_ids)
        for user in user_ids:
            clock = StageClock()
            with clock.stage("score"):
                top = self.model.recommend(user, ctx.k, exclude=ctx.seen(user))
                tests = ctx.split.test.get(user, [])
                pairs: list[tuple[float, float]] = []
                if self.predicts_ratings and tests:
                    preds = self.model.predict([user] * len(tests), [t.parent_asin for t in tests])
                    pairs = [(float(p), t.rating) for p, t in zip(preds, tests, strict=True)]
            out.append(UserRecs(user_id=user, items=[a for a, _ in top], scores=[s for _, s in top],
                                cold=user not in known, rating_pairs=pairs, stage_seconds=clock.per_user(1)))
        return out


class AlsExplicitStrategy(_AlsStrategy):
    """Biases + explicit ALS factors: predicts star ratings, ranks by predicted rating."""

    name = "als"
    implicit = False


class AlsImplicitStrategy(_AlsStrategy):
    """Implicit-feedback ALS (every review a positive, confidence from the rating): ranking only."""

    name = "als_implicit"
    implicit = True
    predicts_ratings = False
