"""The rating model's floor is the bias baseline: ALS factors are kept only when they lower the
validation RMSE (real Spark, local mode)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.als.evaluation import evaluate
from services.als.model import AlsParams, fit
from services.als.training import gate_factors
from tests.als.synth import planted_ratings

pytestmark = pytest.mark.slow


def bias_only_ratings(users: int = 200, items: int = 120, seed: int = 3) -> pd.DataFrame:
    """Ratings that are user bias + item bias + noise: there is nothing for factors to find."""
    rng = np.random.default_rng(seed)
    bu, bi = rng.normal(0, 0.5, users), rng.normal(0, 0.5, items)
    rows = []
    for u in range(users):
        for step, i in enumerate(rng.choice(items, size=int(rng.integers(5, 15)), replace=False)):
            r = float(np.clip(np.rint(3.6 + bu[u] + bi[i] + rng.normal(0, 0.8)), 1, 5))
            rows.append((f"U{u}", f"I{i}", r, 1_600_000_000_000 + step * 86_400_000))
    return pd.DataFrame(rows, columns=["user_id", "parent_asin", "rating", "timestamp"])


def test_factors_that_only_fit_noise_are_dropped(spark: Any) -> None:
    overfit = AlsParams(rank=30, maxIter=10, regParam=0.001)
    gate = gate_factors(bias_only_ratings(), params=overfit, spark=spark)
    assert gate["factors"] == "dropped", gate
    assert gate["validation_rmse"] > gate["validation_rmse_bias"]


def test_factors_that_find_planted_tastes_are_kept(spark: Any) -> None:
    gate = gate_factors(planted_ratings(), params=AlsParams(rank=10, maxIter=10, regParam=0.1), spark=spark)
    assert gate["factors"] == "kept", gate
    assert gate["validation_rmse"] < gate["validation_rmse_bias"]


def test_a_model_without_factors_predicts_the_bias_baseline(spark: Any) -> None:
    ratings = planted_ratings(users=80, items=60)
    model = fit(ratings, params=AlsParams(rank=5, maxIter=5, regParam=0.1), spark=spark).without_factors()
    users, items = ratings["user_id"].tolist(), ratings["parent_asin"].tolist()
    assert np.allclose(model.predict(users, items), model.predict_baseline(users, items))
    m = evaluate(model, ratings.tail(50))
    assert m["rmse"] == pytest.approx(m["rmse_bias"])
