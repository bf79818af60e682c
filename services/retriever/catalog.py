"""The item catalog the ranking reads: display fields and rating statistics per parent_asin.

Immutable: a refresh builds a new :class:`Catalog` and swaps the reference, like the index.
Built from plain objects (offline evaluation, tests) or from the database (the service).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.popularity import (
    DEFAULT_PRIOR_COUNT,
    ItemStats,
    combine_stats,
    global_mean,
    rank_popular,
    review_aggregates,
)
from shared.records import get_field

MAX_FEATURES = 10
MAX_FEATURE_CHARS = 300

_generation = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ItemInfo:
    parent_asin: str
    title: str
    main_category: str | None
    features: tuple[str, ...]
    average_rating: float | None
    rating_number: int
    bayes_score: float
    # raw inputs kept so stats can be recomputed when reviews arrive
    meta_average: float | None = None
    meta_count: int | None = None

    @property
    def score(self) -> float:
        """The popularity score (``shared.popularity.pick_popular`` reads it)."""
        return self.bayes_score

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent_asin": self.parent_asin,
            "title": self.title,
            "main_category": self.main_category,
            "features": list(self.features),
            "average_rating": self.average_rating,
            "rating_number": self.rating_number,
        }


def _features(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(str(f)[:MAX_FEATURE_CHARS] for f in raw[:MAX_FEATURES] if isinstance(f, str) and f.strip())


def make_info(item: Any, stats: ItemStats) -> ItemInfo:
    avg = get_field(item, "average_rating")
    return ItemInfo(
        parent_asin=str(get_field(item, "parent_asin")),
        title=str(get_field(item, "title") or ""),
        main_category=get_field(item, "main_category"),
        features=_features(get_field(item, "features")),
        average_rating=None if stats.average_rating is None else round(stats.average_rating, 3),
        rating_number=stats.rating_number,
        bayes_score=stats.bayes_score,
        meta_average=None if avg is None else float(avg),
        meta_count=get_field(item, "rating_number"),
    )


@dataclass(frozen=True, eq=False)
class Catalog:
    items: dict[str, ItemInfo]
    prior_mean: float
    prior_count: float = DEFAULT_PRIOR_COUNT
    review_sums: dict[str, tuple[float, int]] = field(default_factory=dict)
    generation: int = field(default_factory=lambda: next(_generation))
    derived: dict[Any, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, parent_asin: object) -> bool:
        return parent_asin in self.items

    def get(self, parent_asin: str) -> ItemInfo | None:
        return self.items.get(parent_asin)

    @classmethod
    def from_items(
        cls, items: Iterable[Any], reviews: Any = (), *, prior_count: float = DEFAULT_PRIOR_COUNT
    ) -> Catalog:
        """Items (ItemIn, ORM rows or dicts) plus reviews (objects, dicts or a DataFrame)."""
        items_list = list(items.itertuples(index=False)) if hasattr(items, "itertuples") else list(items)
        agg = review_aggregates(reviews)
        return cls.from_aggregates(items_list, agg, prior_count=prior_count)

    @classmethod
    def from_aggregates(
        cls, items: list[Any], agg: dict[str, tuple[float, int]], *, prior_count: float
    ) -> Catalog:
        mean = global_mean(items, agg)
        out: dict[str, ItemInfo] = {}
        for it in items:
            asin = str(get_field(it, "parent_asin"))
            rs, rn = agg.get(asin, (0.0, 0))
            avg = get_field(it, "average_rating")
            stats = combine_stats(
                meta_average=None if avg is None else float(avg),
                meta_count=get_field(it, "rating_number"),
                review_sum=rs,
                review_count=rn,
                prior_mean=mean,
                prior_count=prior_count,
            )
            out[asin] = make_info(it, stats)
        return cls(items=out, prior_mean=mean, prior_count=prior_count, review_sums=dict(agg))

    def updated(
        self,
        *,
        items: Iterable[Any] = (),
        aggregates: Mapping[str, tuple[float, int]] | None = None,
        removed: Iterable[str] = (),
    ) -> Catalog:
        """A new catalog with changed items and/or new review aggregates (prior mean kept)."""
        agg = dict(self.review_sums)
        if aggregates:
            agg.update(aggregates)
        out = dict(self.items)
        for asin in removed:
            out.pop(asin, None)
        changed: dict[str, Any] = {str(get_field(it, "parent_asin")): it for it in items}
        touched = set(changed) | (set(aggregates) if aggregates else set())
        for asin in touched:
            src: Any = changed.get(asin)
            if src is None:
                old = out.get(asin)
                if old is None:
                    continue  # reviews of an item we have no metadata for yet
                src = {
                    "parent_asin": asin,
                    "title": old.title,
                    "main_category": old.main_category,
                    "features": list(old.features),
                    "average_rating": old.meta_average,
                    "rating_number": old.meta_count,
                }
            rs, rn = agg.get(asin, (0.0, 0))
            avg = get_field(src, "average_rating")
            stats = combine_stats(
                meta_average=None if avg is None else float(avg),
                meta_count=get_field(src, "rating_number"),
                review_sum=rs,
                review_count=rn,
                prior_mean=self.prior_mean,
                prior_count=self.prior_count,
            )
            out[asin] = make_info(src, stats)
        return Catalog(items=out, prior_mean=self.prior_mean, prior_count=self.prior_count, review_sums=agg)

    def popular_order(self) -> list[ItemInfo]:
        """Rated items by Bayesian average, best first (all items when none is rated)."""
        if "popular" not in self.derived:
            self.derived["popular"] = rank_popular(self.items.values())
        return self.derived["popular"]
