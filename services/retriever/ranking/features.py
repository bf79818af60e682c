"""Features of (user, candidate) pairs for the learned ranker, built from the candidate sources' lists.

One user's candidates are the union of every source's top ``depth`` (excluding what the user has seen)
plus the popular top ``popular_depth``, so the list is never shorter than the answer. Each candidate
gets one row:

* per source ``s``: its score divided by the user's best score of ``s`` (``s_norm``, 0 when ``s`` does
  not list it), its reciprocal rank ``1 / (rank + 1)`` (``s_rr``) and its raw score (``s_raw``);
* the item: its mean rating shrunk towards the catalogue's mean (a prior of ``PRIOR_COUNT`` reviews;
  items with fewer reviews than that get the catalogue's mean) and its log count in the last
  ``recent_days`` of the data. The raw count, the raw mean and the days since the last review are
  deliberately *not* features: they single out the items nobody has reviewed yet, and on a slice
  built from reviews (every catalogue item reviewed by somebody) "never reviewed in training" means
  "somebody's held-out item", a leak the ranker learned at once (multicategory
  HR@10 0.51 with them, against 0.20 for the best honest baseline). Popularity still reaches the
  model through the ``popular`` source's columns;
* the user: log history length; how many sources list the item;
* the match with the history: share of the user's recent items from the same store, and from the same
  main category.

The first ``len(sources)`` columns are the ``norm`` columns, so a weighted blend of max-normalised
sources is ``matrix[:, :n_sources] @ weights`` (what :mod:`learn` tunes).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.retriever.sources.base import Candidates, CandidateSource
from shared.records import get_field

DAY_S = 86_400.0
PRIOR_COUNT = 5.0
RECENT_ITEMS = 10  # history items the store/category match looks at


def _seconds(ts: int) -> float:
    """Review timestamps are ms since epoch (Amazon 2023) or seconds (older data)."""
    return ts / 1000.0 if ts > 10**11 else float(ts)


@dataclass
class ItemFacts:
    """What the features read of the items: counts, ratings, recency, store and category."""

    count: dict[str, int] = field(default_factory=dict)
    recent: dict[str, int] = field(default_factory=dict)
    rating: dict[str, float] = field(default_factory=dict)  # shrunk mean
    prior: float = 0.0
    store: dict[str, str] = field(default_factory=dict)
    category: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fit(cls, *, interactions: Sequence[Any], items: Iterable[Any] = (), recent_days: float = 30.0) -> ItemFacts:
        facts = cls()
        if interactions:
            newest = max(_seconds(int(get_field(r, "timestamp", 0))) for r in interactions)
        else:
            newest = 0.0
        totals: dict[str, float] = {}
        for r in interactions:
            asin = str(get_field(r, "parent_asin"))
            ts = _seconds(int(get_field(r, "timestamp", 0)))
            facts.count[asin] = facts.count.get(asin, 0) + 1
            totals[asin] = totals.get(asin, 0.0) + float(get_field(r, "rating", 0.0))
            if newest - ts <= recent_days * DAY_S:
                facts.recent[asin] = facts.recent.get(asin, 0) + 1
        n = sum(facts.count.values())
        facts.prior = sum(totals.values()) / n if n else 0.0
        facts.rating = {a: (totals[a] + PRIOR_COUNT * facts.prior) / (c + PRIOR_COUNT)
                        for a, c in facts.count.items() if c >= PRIOR_COUNT}
        for it in items:
            asin = get_field(it, "parent_asin")
            if asin is None:
                continue
            store = get_field(it, "store")
            cat = get_field(it, "main_category")
            if store:
                facts.store[str(asin)] = str(store).strip().lower()
            if cat:
                facts.category[str(asin)] = str(cat).strip().lower()
        return facts


@dataclass
class UserCandidates:
    """One user's candidate rows: item ids (``parent_asin`` order) and the feature matrix."""

    asins: list[str]
    matrix: np.ndarray  # (n_candidates, n_features)
    popularity: np.ndarray  # popular count of each candidate (the tie-break after the score)
    sources: list[str] = field(default_factory=list)  # per candidate, the source that ranks it best


class FeatureBuilder:
    """Builds :class:`UserCandidates` from fitted sources (names in column order) and item facts."""

    ITEM_FEATURES = ("item_rating", "item_log_recent", "user_log_history", "n_sources", "match_store",
                     "match_category")

    def __init__(self, *, sources: Mapping[str, CandidateSource], facts: ItemFacts, depth: int = 100,
                 popular_depth: int = 50, popular: str = "popular") -> None:
        self.sources = dict(sources)
        self.names = list(self.sources)
        self.facts = facts
        self.depth = depth
        self.popular_depth = popular_depth
        self.popular = popular

    @property
    def feature_names(self) -> list[str]:
        n = self.names
        return ([f"{s}_norm" for s in n] + [f"{s}_rr" for s in n] + [f"{s}_raw" for s in n]
                + list(self.ITEM_FEATURES))

    def lists(self, *, history: Sequence[str], exclude: Container[str],
              extra: Mapping[str, Candidates] | None = None) -> dict[str, Candidates]:
        """Each source's list for the user (``extra`` supplies lists computed elsewhere, e.g. ALS)."""
        out: dict[str, Candidates] = {}
        for name, source in self.sources.items():
            if extra is not None and name in extra:
                out[name] = [(a, s) for a, s in extra[name] if a not in exclude and s > 0][: self.depth]
                continue
            k = self.popular_depth if name == self.popular else self.depth
            wanted = bool(history) or name == self.popular
            out[name] = source.candidates(history=history, k=k, exclude=exclude) if wanted else []
        return out

    def build(self, *, history: Sequence[str], exclude: Container[str],
              extra: Mapping[str, Candidates] | None = None) -> UserCandidates:
        lists = self.lists(history=history, exclude=exclude, extra=extra)
        asins = sorted({a for lst in lists.values() for a, _ in lst})
        row = {a: i for i, a in enumerate(asins)}
        n_src = len(self.names)
        m = np.zeros((len(asins), 3 * n_src + len(self.ITEM_FEATURES)), dtype=np.float64)
        best_rank = np.full((len(asins),), np.inf)
        best_source = [""] * len(asins)
        for j, name in enumerate(self.names):
            lst = lists.get(name, [])
            if not lst:
                continue
            top = lst[0][1]
            for r, (a, s) in enumerate(lst):
                i = row[a]
                m[i, j] = s / top if top > 0 else 0.0
                m[i, n_src + j] = 1.0 / (r + 1)
                m[i, 2 * n_src + j] = s
                if name != self.popular and r < best_rank[i]:
                    best_rank[i], best_source[i] = r, name
        f = self.facts
        base = 3 * n_src
        recent = list(history[-RECENT_ITEMS:])
        stores = Counter(f.store[a] for a in recent if a in f.store)
        cats = Counter(f.category[a] for a in recent if a in f.category)
        n_recent = max(1, len(recent))
        log_hist = math.log1p(len(history))
        popularity = np.zeros(len(asins))
        for i, a in enumerate(asins):
            c = f.count.get(a, 0)
            popularity[i] = c
            m[i, base] = f.rating.get(a, f.prior)
            m[i, base + 1] = math.log1p(f.recent.get(a, 0))
            m[i, base + 2] = log_hist
            st, ca = f.store.get(a), f.category.get(a)
            m[i, base + 4] = stores[st] / n_recent if st else 0.0
            m[i, base + 5] = cats[ca] / n_recent if ca else 0.0
            if not best_source[i]:
                best_source[i] = self.popular
        m[:, base + 3] = (m[:, n_src:2 * n_src] > 0).sum(axis=1)
        return UserCandidates(asins=asins, matrix=m, popularity=popularity, sources=best_source)

