"""Turn each strategy's recommendations into the metrics.json block: overall, cold and warm users.

Groups are the split's: a user is *cold* when they have no training history (the same users for
every strategy, so the groups compare). ``cold_start_ratio`` is different: the share of users a
personalized strategy actually served with its cold-start fallback (no history, or a profile that
could not be built). A metric that does not apply to a strategy or group is absent.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tools.evaluation import metrics as M
from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy, UserRecs

METRIC_KEYS = ("hit_rate@{k}", "recall@{k}", "ndcg@{k}", "map@{k}", "rmse", "mae", "cold_start_ratio",
               "avg_specificity", "avg_cos_sim", "ad_dup_ratio", "avg_rating", "catalog_coverage",
               "intra_list_diversity", "novelty", "unique_reason_ratio", "feature_mention_ratio",
               "grounding_ratio", "seconds_per_user")


def metric_keys(k: int) -> list[str]:
    return [m.format(k=k) for m in METRIC_KEYS]


def _put(out: dict[str, Any], key: str, value: float | None) -> None:
    if value is not None:
        out[key] = round(float(value), 6)


def group_metrics(ctx: EvalContext, strategy: OfflineStrategy, recs: Sequence[UserRecs]) -> dict[str, Any]:
    """Every applicable metric over one group of users."""
    k = ctx.k
    out: dict[str, Any] = {"n_users": len(recs)}
    if not recs:
        return out
    cat = ctx.catalog
    lists = [r.items[:k] for r in recs]
    relevant = [[t.parent_asin for t in ctx.split.test.get(r.user_id, [])] for r in recs]
    pairs_lr = list(zip(lists, relevant, strict=True))
    _put(out, f"hit_rate@{k}", M.mean_or_none(M.hit_rate_at_k(lst, rel, k) for lst, rel in pairs_lr))
    _put(out, f"recall@{k}", M.mean_or_none(M.recall_at_k(lst, rel, k) for lst, rel in pairs_lr))
    _put(out, f"ndcg@{k}", M.mean_or_none(M.ndcg_at_k(lst, rel, k) for lst, rel in pairs_lr))
    _put(out, f"map@{k}", M.mean_or_none(M.average_precision_at_k(lst, rel, k) for lst, rel in pairs_lr))
    if strategy.predicts_ratings:
        pairs = [p for r in recs for p in r.rating_pairs]
        _put(out, "rmse", M.rmse(pairs))
        _put(out, "mae", M.mae(pairs))
    if strategy.personalized:
        _put(out, "cold_start_ratio", M.cold_start_ratio(r.cold for r in recs))
    profiles = [ctx.profiles.get(r.user_id) for r in recs]
    if getattr(strategy, "uses_profiles", False):
        _put(out, "avg_specificity", M.avg_specificity(
            [p.terms if p is not None and not p.cold else None for p in profiles], ctx.vocab))
    if cat.has_vectors:
        vec_lists = [cat.vectors_of(lst) for lst in lists]
        if ctx.profiles:
            pvecs = [p.vector if p is not None and not p.cold else None for p in profiles]
            _put(out, "avg_cos_sim", M.avg_cos_sim(pvecs, vec_lists))
        _put(out, "intra_list_diversity", M.intra_list_diversity(vec_lists))
    _put(out, "avg_rating", M.avg_rating([[cat.average_rating.get(a) for a in lst] for lst in lists]))
    _put(out, "catalog_coverage", M.catalog_coverage(lists, len(cat), k))
    _put(out, "novelty", M.novelty(lists, ctx.item_popularity, ctx.n_train_users, k))
    if any(r.reasons for r in recs):
        reasons = [list(r.reasons or [])[:k] for r in recs]
        _put(out, "ad_dup_ratio", M.ad_dup_ratio(reasons))
        _put(out, "unique_reason_ratio", M.unique_reason_ratio(reasons))
        feat_pairs = [(reason, cat.features(a) or [cat.title(a)])
                      for r, rs in zip(recs, reasons, strict=True)
                      for a, reason in zip(r.items, rs, strict=False)]
        _put(out, "feature_mention_ratio", M.feature_mention_ratio(feat_pairs))
        if ctx.profiles:
            ground = [(reason, p.positive_terms if p is not None and not p.cold else None)
                      for p, rs in zip(profiles, reasons, strict=True) for reason in rs]
            _put(out, "grounding_ratio", M.grounding_ratio(ground))
    _put(out, "seconds_per_user", sum(stage_seconds(recs).values()))
    return out


def stage_seconds(recs: Sequence[UserRecs]) -> dict[str, float]:
    """Mean seconds per user of each online stage (batch stages spread over their batch)."""
    totals: dict[str, float] = {}
    for r in recs:
        for name, s in r.stage_seconds.items():
            totals[name] = totals.get(name, 0.0) + s
    return {name: s / len(recs) for name, s in sorted(totals.items())} if recs else {}


def strategy_block(ctx: EvalContext, strategy: OfflineStrategy, recs: Sequence[UserRecs]) -> dict[str, Any]:
    cold_users = ctx.split.cold_users
    return {
        "overall": group_metrics(ctx, strategy, recs),
        "cold": group_metrics(ctx, strategy, [r for r in recs if r.user_id in cold_users]),
        "warm": group_metrics(ctx, strategy, [r for r in recs if r.user_id not in cold_users]),
    }
