"""Popular by interaction count (in a recent window, above a rating floor), as a candidate source.

The definition is ``shared.popularity.popular_by_count``, the one the evaluation's ``popular_count``
and the fallbacks read; this wrapper gives it the candidate-source interface (the same list for
everybody, minus what the user has seen).
"""
from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import Any

from services.retriever.sources.base import Candidates
from shared.popularity import popular_by_count


class PopularSource:
    """``popular``: the most reviewed items, the same for every user."""

    name = "popular"

    def __init__(self, *, window_days: float | None = None, min_rating: float | None = None,
                 now: int | None = None) -> None:
        self.window_days = window_days
        self.min_rating = min_rating
        self.now = now
        self.ranked: Candidates = []

    def fit(self, *, interactions: Sequence[Any], items: Iterable[Any] = ()) -> None:
        self.ranked = popular_by_count(interactions, window_days=self.window_days, min_rating=self.min_rating,
                                       now=self.now)

    def candidates(self, *, history: Sequence[str] = (), k: int, exclude: Container[str] = ()) -> Candidates:
        out: Candidates = []
        for asin, score in self.ranked:
            if asin not in exclude:
                out.append((asin, score))
                if len(out) == k:
                    break
        return out
