"""A weighted blend of candidate sources, filled from a fallback source up to ``k``.

Each source's list (its top ``depth``) is normalised per user, so that a cosine, a probability and a
count can be added: ``max`` divides by the user's best score of that source, ``rank`` gives the item
at 0-based rank ``r`` the score ``1 / (r + 1)``. The blended score is the weighted sum; the items with
a positive blended score come first (ties by ``parent_asin``), and when they are fewer than ``k`` the
fallback's list (popular) fills the rest with score 0. A blend with one weight is that source alone.
"""
from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any

from services.retriever.sources.base import Candidates, CandidateSource

NORMALISATIONS = ("max", "rank")
DEFAULT_DEPTH = 200


def normalise(candidates: Candidates, how: str) -> Candidates:
    """One source's list on a 0-1 scale (see the module docstring)."""
    if not candidates:
        return []
    if how == "max":
        top = candidates[0][1]
        return [(a, s / top) for a, s in candidates] if top > 0 else []
    if how == "rank":
        return [(a, 1.0 / (r + 1)) for r, (a, _) in enumerate(candidates)]
    raise ValueError(f"unknown normalisation {how!r}; choose from {', '.join(NORMALISATIONS)}")


def fill(ranked: Candidates, fallback: CandidateSource | None, *, history: Sequence[str], k: int,
         exclude: Container[str]) -> Candidates:
    """``ranked`` then the fallback's items (score 0) up to ``k``, without repeats or ``exclude``."""
    out = list(ranked[:k])
    if len(out) >= k or fallback is None:
        return out
    chosen = {a for a, _ in out}
    for asin, _ in fallback.candidates(history=history, k=k + len(chosen), exclude=exclude):
        if asin not in chosen:
            out.append((asin, 0.0))
            chosen.add(asin)
            if len(out) == k:
                break
    return out


class WeightedBlend:
    """Fitted sources, their weights and one normalisation; ``rank`` gives a user's top ``k``."""

    def __init__(self, *, sources: Mapping[str, CandidateSource], weights: Mapping[str, float],
                 fallback: CandidateSource | None = None, depth: int = DEFAULT_DEPTH,
                 normalisation: str = "max") -> None:
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {normalisation!r}")
        unknown = set(weights) - set(sources)
        if unknown:
            raise ValueError(f"weights for unknown sources: {sorted(unknown)}")
        self.sources = dict(sources)
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.sources}
        self.fallback = fallback
        self.depth = depth
        self.normalisation = normalisation

    def blended(self, *, history: Sequence[str], exclude: Container[str] = ()) -> Candidates:
        """Every item with a positive blended score, best first, ties by asin."""
        combined: dict[str, float] = {}
        for name, source in self.sources.items():
            weight = self.weights[name]
            if weight <= 0:
                continue
            listed = source.candidates(history=history, k=self.depth, exclude=exclude)
            for asin, score in normalise(listed, self.normalisation):
                combined[asin] = combined.get(asin, 0.0) + weight * score
        return sorted(((a, s) for a, s in combined.items() if s > 0), key=lambda t: (-t[1], t[0]))

    def rank(self, *, history: Sequence[str], k: int, exclude: Container[str] = ()) -> Candidates:
        """The user's top ``k``: blended items first, then the fallback's (score 0)."""
        return fill(self.blended(history=history, exclude=exclude)[:k], self.fallback, history=history,
                    k=k, exclude=exclude)

    def describe(self) -> dict[str, Any]:
        return {"weights": {n: round(w, 4) for n, w in self.weights.items()},
                "normalisation": self.normalisation, "depth": self.depth}
