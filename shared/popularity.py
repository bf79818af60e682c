"""Item statistics: average rating and rating count, and a Bayesian-average popularity score.

Metadata (``average_rating``, ``rating_number``) covers an item's whole Amazon history, our reviews
table only what was ingested; whichever has more ratings wins, and an item without metadata gets its
figures from the reviews. The popularity score shrinks small samples towards the global mean:
``(C * m + sum) / (C + n)`` with ``C`` the prior count and ``m`` the global mean rating.
Works on plain Python objects, dicts or a pandas DataFrame; no database needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_PRIOR_COUNT = 10.0
DEFAULT_PRIOR_MEAN = 4.0  # used only when there is no rating at all to estimate it from


@dataclass(frozen=True, slots=True)
class ItemStats:
    average_rating: float | None
    rating_number: int
    bayes_score: float
    source: Literal["metadata", "reviews", "none"]


def bayesian_average(*, total: float, count: float, prior_mean: float, prior_count: float) -> float:
    """``(C*m + sum) / (C + n)``; the prior mean when there is nothing to average."""
    denom = prior_count + count
    if denom <= 0:
        return prior_mean
    return (prior_count * prior_mean + total) / denom


def _get(obj: Any, name: str) -> Any:
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    if isinstance(value, float) and math.isnan(value):  # pandas marks missing numbers with NaN
        return None
    return value


def _iter_rows(data: Any) -> Iterable[Any]:
    if hasattr(data, "itertuples"):  # pandas DataFrame
        return data.itertuples(index=False)
    return data


def review_aggregates(reviews: Any) -> dict[str, tuple[float, int]]:
    """Sum and count of ratings per parent_asin from reviews (objects, dicts or a DataFrame)."""
    if hasattr(reviews, "groupby") and hasattr(reviews, "columns"):
        if len(reviews) == 0:
            return {}
        grouped = reviews.groupby("parent_asin")["rating"].agg(["sum", "count"])
        return {
            str(a): (float(s), int(n))
            for a, s, n in zip(grouped.index, grouped["sum"], grouped["count"], strict=True)
        }
    out: dict[str, list[float]] = {}
    for r in _iter_rows(reviews):
        asin, rating = _get(r, "parent_asin"), _get(r, "rating")
        if asin is None or rating is None:
            continue
        acc = out.setdefault(str(asin), [0.0, 0])
        acc[0] += float(rating)
        acc[1] += 1
    return {a: (s, int(n)) for a, (s, n) in out.items()}


def combine_stats(
    *,
    meta_average: float | None,
    meta_count: int | None,
    review_sum: float,
    review_count: int,
    prior_mean: float,
    prior_count: float,
) -> ItemStats:
    """One item's figures from its metadata and its review aggregate (the larger sample wins)."""
    meta_n = int(meta_count or 0)
    if meta_average is not None and meta_n > 0 and meta_n >= review_count:
        return ItemStats(
            float(meta_average),
            meta_n,
            bayesian_average(
                total=meta_average * meta_n, count=meta_n, prior_mean=prior_mean, prior_count=prior_count
            ),
            "metadata",
        )
    if review_count > 0:
        return ItemStats(
            review_sum / review_count,
            review_count,
            bayesian_average(
                total=review_sum, count=review_count, prior_mean=prior_mean, prior_count=prior_count
            ),
            "reviews",
        )
    if meta_average is not None:  # an average without a count: trust it as one rating
        return ItemStats(
            float(meta_average),
            0,
            bayesian_average(total=meta_average, count=1, prior_mean=prior_mean, prior_count=prior_count),
            "metadata",
        )
    return ItemStats(
        None, 0, bayesian_average(total=0.0, count=0, prior_mean=prior_mean, prior_count=prior_count), "none"
    )


def global_mean(items: Iterable[Any], aggregates: Mapping[str, tuple[float, int]]) -> float:
    """Rating-count-weighted mean over items (metadata where present, else reviews)."""
    total, count = 0.0, 0
    seen: set[str] = set()
    for it in _iter_rows(items):
        asin = str(_get(it, "parent_asin"))
        seen.add(asin)
        avg, n = _get(it, "average_rating"), int(_get(it, "rating_number") or 0)
        rs, rn = aggregates.get(asin, (0.0, 0))
        if avg is not None and n > 0 and n >= rn:
            total += float(avg) * n
            count += n
        elif rn:
            total += rs
            count += rn
    for asin, (rs, rn) in aggregates.items():
        if asin not in seen:
            total += rs
            count += rn
    return total / count if count else DEFAULT_PRIOR_MEAN


def item_stats(
    reviews: Any, items: Any, *, prior_count: float = DEFAULT_PRIOR_COUNT, prior_mean: float | None = None
) -> dict[str, ItemStats]:
    """Stats for every item in ``items`` (and every item that only appears in ``reviews``).

    ``reviews``: objects/dicts/DataFrame with ``parent_asin`` and ``rating``; ``items``: with
    ``parent_asin`` and optional ``average_rating`` / ``rating_number``.
    """
    items_list = list(_iter_rows(items))
    agg = review_aggregates(reviews)
    mean = prior_mean if prior_mean is not None else global_mean(items_list, agg)
    out: dict[str, ItemStats] = {}
    for it in items_list:
        asin = str(_get(it, "parent_asin"))
        rs, rn = agg.get(asin, (0.0, 0))
        avg = _get(it, "average_rating")
        out[asin] = combine_stats(
            meta_average=None if avg is None else float(avg),
            meta_count=_get(it, "rating_number"),
            review_sum=rs,
            review_count=rn,
            prior_mean=mean,
            prior_count=prior_count,
        )
    for asin, (rs, rn) in agg.items():
        if asin not in out:
            out[asin] = combine_stats(
                meta_average=None,
                meta_count=None,
                review_sum=rs,
                review_count=rn,
                prior_mean=mean,
                prior_count=prior_count,
            )
    return out
