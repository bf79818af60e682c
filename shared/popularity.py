"""Item statistics: average rating and rating count, and a Bayesian-average popularity score.

Metadata (``average_rating``, ``rating_number``) covers an item's whole Amazon history, our reviews
table only what was ingested; whichever has more ratings wins, and an item without metadata gets its
figures from the reviews. The popularity score shrinks small samples towards the global mean:
``(C * m + sum) / (C + n)`` with ``C`` the prior count and ``m`` the global mean rating.
Works on plain Python objects, dicts or a pandas DataFrame; no database needed.

:func:`popular_by_count` is the one count-based definition (interactions in a recent window with a
rating floor): the candidate sources and the evaluation's ``popular_count`` read it.

:func:`pick_popular` is the one "popular" list: the top tier of an already ranked list, shuffled per
user (deterministically) and mixed across categories. The retriever's popular / cold-start candidates
call it; the offline evaluation and the gateway's database fallback can call the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from shared.records import get_field

DEFAULT_PRIOR_COUNT = 10.0
DEFAULT_PRIOR_MEAN = 4.0  # used only when there is no rating at all to estimate it from
DEFAULT_TEMPERATURE = 0.15  # stars of Gumbel noise in the per-user shuffle

T = TypeVar("T")


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
        asin, rating = get_field(r, "parent_asin"), get_field(r, "rating")
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
        asin = str(get_field(it, "parent_asin"))
        seen.add(asin)
        avg, n = get_field(it, "average_rating"), int(get_field(it, "rating_number") or 0)
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
        asin = str(get_field(it, "parent_asin"))
        rs, rn = agg.get(asin, (0.0, 0))
        avg = get_field(it, "average_rating")
        out[asin] = combine_stats(
            meta_average=None if avg is None else float(avg),
            meta_count=get_field(it, "rating_number"),
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


def user_seed(user_id: str | None) -> int:
    """A stable 64-bit seed per user (sha1), the same in every process and run."""
    return int.from_bytes(hashlib.sha1((user_id or "").encode()).digest()[:8], "little")


def rank_popular(items: Iterable[T]) -> list[T]:
    """Items by popularity, best first: the rated ones (all items when none is rated) by ``score``
    (the Bayesian average), then rating count, then ``parent_asin`` (deterministic)."""
    pool = list(items)
    rated = [i for i in pool if int(get_field(i, "rating_number", 0)) > 0 or get_field(i, "average_rating") is not None]
    return sorted(
        rated or pool,
        key=lambda i: (-float(get_field(i, "score", 0.0)), -int(get_field(i, "rating_number", 0)),
                       str(get_field(i, "parent_asin"))),
    )


def pick_popular(
    ranked: Iterable[T],
    *,
    user_id: str | None,
    k: int,
    exclude: Container[str] = (),
    tier: int,
    temperature: float = DEFAULT_TEMPERATURE,
) -> list[T]:
    """Up to ``k`` popular items for this user, from ``ranked`` (best first; dicts or objects with
    ``parent_asin``, ``score`` and ``main_category``).

    The first ``max(tier, 3 * k)`` items not in ``exclude`` form the top tier (``ranked`` is read no
    further, so it may be a lazy filter over a long list). Their scores get Gumbel noise of
    ``temperature`` seeded by the user id, so each user sees a different but stable order; the
    result then takes one item per category in turn (categories in the order of their best shuffled
    item), so one category cannot fill the list.
    """
    tier_size = max(tier, 3 * k)
    top: list[T] = []
    for item in ranked:
        if get_field(item, "parent_asin") not in exclude:
            top.append(item)
            if len(top) == tier_size:
                break
    rng = np.random.default_rng(user_seed(user_id))
    noise = rng.gumbel(size=len(top)) * temperature
    scores = np.asarray([float(get_field(t, "score", 0.0)) for t in top])
    shuffled = [top[i] for i in np.argsort(-(scores + noise), kind="stable")]
    by_category: dict[str, list[T]] = {}
    for item in shuffled:
        by_category.setdefault(get_field(item, "main_category") or "", []).append(item)
    picked: list[T] = []
    queues = list(by_category.values())
    while len(picked) < k and queues:
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop(0))
        queues = [q for q in queues if q]
    return picked


DAY_MS = 86_400_000


def popular_by_count(
    interactions: Any,
    *,
    window_days: float | None = None,
    min_rating: float | None = None,
    now: int | None = None,
) -> list[tuple[str, float]]:
    """Items by how many interactions they had, most first, ties by ``parent_asin``: ``(asin, count)``.

    ``interactions``: objects, dicts or a DataFrame with ``parent_asin``, ``rating`` and ``timestamp``
    (ms). Only interactions rated at least ``min_rating`` (None: any) and newer than ``window_days``
    before ``now`` (None: all time) count; ``now`` defaults to the newest timestamp in
    ``interactions``, so an offline log is read as of its own end.
    """
    rows = [r for r in _iter_rows(interactions) if get_field(r, "parent_asin") is not None]
    if now is None:
        stamps = [int(get_field(r, "timestamp", 0)) for r in rows]
        now = max(stamps) if stamps else 0
    since = None if window_days is None else now - window_days * DAY_MS
    counts: dict[str, int] = {}
    for r in rows:
        if min_rating is not None and float(get_field(r, "rating", 0.0)) < min_rating:
            continue
        ts = int(get_field(r, "timestamp", 0))
        if ts > now or (since is not None and ts < since):
            continue
        asin = str(get_field(r, "parent_asin"))
        counts[asin] = counts.get(asin, 0) + 1
    return [(a, float(n)) for a, n in sorted(counts.items(), key=lambda t: (-t[1], t[0]))]
