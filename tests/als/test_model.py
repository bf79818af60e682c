"""The rating model on planted tastes, with real Spark (local[2]); no database."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.als.data import leave_last_out
from services.als.evaluation import evaluate
from services.als.model import AlsParams, FittedModel, fit

# 15 iterations: without the checkpoint directory and interval this dies with a StackOverflowError.
PARAMS = AlsParams(rank=8, maxIter=15, regParam=0.1, checkpointInterval=2)


@pytest.fixture(scope="module")
def split(ratings: pd.DataFrame) -> Any:
    return leave_last_out(ratings)


@pytest.fixture(scope="module")
def explicit(split: Any, spark: Any) -> FittedModel:
    return fit(split.train, params=PARAMS, spark=spark)


def test_beats_both_rating_baselines_on_held_out_rmse(explicit: FittedModel, split: Any) -> None:
    m = evaluate(explicit, split.test)
    assert m["rmse"] < m["rmse_bias"] < m["rmse_global_mean"], m
    assert m["mae"] < m["mae_bias"], m
    assert m["test_ratings"] == split.test.shape[0]


def test_implicit_kind_ranks_better_than_popularity(split: Any, spark: Any) -> None:
    model = fit(
        split.train, params=AlsParams(rank=8, maxIter=8, regParam=0.1, implicit=True, alpha=10.0), spark=spark
    )
    m = evaluate(model, split.test)
    assert "rmse" not in m  # a ranking model has no rating metrics
    assert m["ranking_users"] > 100
    assert m["recall_at_10"] > m["recall_at_10_popularity"], m
    assert m["ndcg_at_10"] > m["ndcg_at_10_popularity"], m


def test_cold_users_and_items_fall_back_to_biases(explicit: FittedModel) -> None:
    item = str(explicit.item_ids[0])
    cold_user = explicit.predict(["nobody"], [item])[0]
    assert cold_user == pytest.approx(np.clip(explicit.mu + explicit.item_bias[0], 1, 5))
    assert explicit.predict(["nobody"], ["nothing"])[0] == pytest.approx(explicit.mu)
    recs = explicit.recommend("nobody", k=5)
    assert [a for a, _ in recs] == [str(explicit.item_ids[j]) for j in np.argsort(-explicit.item_bias)[:5]]


def test_recommendations_exclude_seen_and_requested_items(explicit: FittedModel, split: Any) -> None:
    user = str(explicit.user_ids[0])
    seen = set(split.train.loc[split.train["user_id"] == user, "parent_asin"])
    recs = explicit.recommend(user, k=10)
    assert len(recs) == 10 and not seen & {a for a, _ in recs}
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    top = recs[0][0]
    assert top not in {a for a, _ in explicit.recommend(user, k=10, exclude=[top])}
    # The batched path agrees with the single-user path.
    users, idx, scores = next(explicit.top_n(10, users=np.array([0])))
    assert [str(explicit.item_ids[j]) for j in idx[0]] == [a for a, _ in recs]
    assert scores[0] == pytest.approx(np.array([s for _, s in recs]), rel=1e-4)

    assert np.isfinite(explicit.user_factors).all() and explicit.params.maxIter >= 15
