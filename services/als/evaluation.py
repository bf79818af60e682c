"""Held-out metrics: RMSE/MAE against two baselines, Recall@k/NDCG@k against popularity.

Every baseline is fitted on the same train split as the model (the biases come from the model's
own fit, the popularity counts from its training interactions), so the comparison is fair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from services.als.model import FittedModel
from services.als.topk import batched_topk


def rating_metrics(model: FittedModel, test: pd.DataFrame) -> dict[str, float]:
    """RMSE and MAE of the model, the global-mean baseline and the user+item-bias baseline."""
    if model.params.implicit:
        raise ValueError("rating metrics need an explicit model")
    truth = test["rating"].to_numpy(dtype=np.float64)
    if len(truth) == 0:
        return {}
    users, items = test["user_id"].tolist(), test["parent_asin"].tolist()
    preds = {
        "": model.predict(users, items),
        "_global_mean": np.full(len(truth), model.mu),
        "_bias": model.predict_baseline(users, items),
    }
    out: dict[str, float] = {}
    for suffix, pred in preds.items():
        err = pred - truth
        out[f"rmse{suffix}"] = float(np.sqrt(np.mean(err**2)))
        out[f"mae{suffix}"] = float(np.mean(np.abs(err)))
    known_u = model.user_ids.get_indexer(pd.Index(users)) >= 0
    known_i = model.item_ids.get_indexer(pd.Index(items)) >= 0
    out["test_ratings"] = float(len(truth))
    out["test_cold_user_fraction"] = float(1.0 - known_u.mean())
    out["test_cold_item_fraction"] = float(1.0 - known_i.mean())
    return out


def _ranking(
    ranked_by_user: dict[int, np.ndarray], relevant: dict[int, set[int]], k: int
) -> dict[str, float]:
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for user, rel in relevant.items():
        ranked = ranked_by_user[user]
        hits = np.array([j in rel for j in ranked[:k]], dtype=np.float64)
        recalls.append(hits.sum() / len(rel))
        ideal = discounts[: min(len(rel), k)].sum()
        ndcgs.append(float((hits * discounts[: len(hits)]).sum() / ideal))
    return {
        "recall": float(np.mean(recalls)) if recalls else 0.0,
        "ndcg": float(np.mean(ndcgs)) if ndcgs else 0.0,
    }


def ranking_metrics(model: FittedModel, test: pd.DataFrame, *, k: int = 10) -> dict[str, float]:
    """Recall@k and NDCG@k of the model and of popularity, for test users that have train history.

    Candidates exclude the user's train items; held-out items the model never saw still count as
    relevant (they simply cannot be hit), so the numbers are not flattered.
    """
    codes = model.user_ids.get_indexer(pd.Index(test["user_id"]))
    warm = test[codes >= 0]
    if warm.empty:
        return {
            f"recall_at_{k}": 0.0,
            f"ndcg_at_{k}": 0.0,
            f"recall_at_{k}_popularity": 0.0,
            f"ndcg_at_{k}_popularity": 0.0,
            "ranking_users": 0.0,
        }
    item_codes = model.item_ids.get_indexer(pd.Index(warm["parent_asin"]))
    # Unknown held-out items get a unique negative code: relevant, never recommendable.
    item_codes = np.where(item_codes >= 0, item_codes, -2 - np.arange(len(item_codes)))
    grouped = (
        pd.DataFrame({"u": model.user_ids.get_indexer(pd.Index(warm["user_id"])), "i": item_codes})
        .groupby("u")["i"]
        .apply(set)
    )
    users = grouped.index.to_numpy()
    relevant = dict(zip(users.tolist(), grouped.to_numpy(), strict=True))

    model_rows = {
        int(u): row
        for block, idx, _ in model.top_n(k, users=users)
        for u, row in zip(block, idx, strict=True)
    }
    zeros = np.zeros((model.n_users, 1), dtype=np.float32)
    no_vectors = np.zeros((model.n_items, 1), dtype=np.float32)
    pop_rows = {
        int(u): row
        for block, idx, _ in batched_topk(
            zeros, no_vectors, users, k, seen=model.seen, item_bias=model.item_counts.astype(np.float32)
        )
        for u, row in zip(block, idx, strict=True)
    }
    ours, pop = _ranking(model_rows, relevant, k), _ranking(pop_rows, relevant, k)
    return {
        f"recall_at_{k}": ours["recall"],
        f"ndcg_at_{k}": ours["ndcg"],
        f"recall_at_{k}_popularity": pop["recall"],
        f"ndcg_at_{k}_popularity": pop["ndcg"],
        "ranking_users": float(len(users)),
    }


def evaluate(model: FittedModel, test: pd.DataFrame, *, k: int = 10) -> dict[str, Any]:
    """All metrics that apply to the model's kind."""
    out: dict[str, Any] = {}
    if not model.params.implicit:
        out.update(rating_metrics(model, test))
    out.update(ranking_metrics(model, test, k=k))
    return out
