"""Choosing a blend's weights on a validation target: each user's held-out next item.

For every validation user the sources' lists (fitted on the data before that item) are gathered once
into a small matrix: one row per candidate (in ``parent_asin`` order), one column per source, each
column normalised as :mod:`blend` does. Scoring a weight vector is then a matrix-vector product per
user, and the held-out item's position in the blended-and-filled list follows without sorting
(items above it: higher score, or equal score and a lower asin; when it is not in the blend, its
place in the fallback list after the user's seen and blended items). This reproduces
:meth:`WeightedBlend.rank` exactly, so the validation NDCG@k of a weight vector is the blend's.

:func:`coordinate_ascent` starts from the best single source (a one-hot weight vector) and only
accepts strict improvements, so the chosen blend is never worse on validation than that source.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.retriever.sources.base import Candidates
from services.retriever.sources.blend import normalise

MISSING = np.iinfo(np.int64).max // 4  # fallback rank of an item the fallback does not list
WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


@dataclass
class FallbackRanks:
    """The fallback's global order (popular): item -> 0-based rank."""

    rank: dict[str, int]

    @classmethod
    def of(cls, ranked: Candidates) -> FallbackRanks:
        return cls({a: r for r, (a, _) in enumerate(ranked)})

    def get(self, asin: str) -> int:
        return self.rank.get(asin, MISSING)


@dataclass
class UserCase:
    """One validation user: candidates x sources matrix and what locating the target needs."""

    matrix: np.ndarray  # (n_candidates, n_sources), normalised per source
    target_row: int  # the target's row in ``matrix``, -1 when no source lists it
    candidate_fallback: np.ndarray  # fallback rank of each candidate
    target_fallback: int  # the target's fallback rank (MISSING when the fallback does not list it)
    target_unseen_rank: int  # its position in the fallback list once the user's seen items are removed
    target_seen: bool  # the target is in the history: excluded everywhere, never a hit


def user_case(lists: Sequence[Candidates], *, target: str, seen: set[str], fallback: FallbackRanks,
              normalisation: str) -> UserCase:
    """Gather one user's source lists (one per column, in the order of ``lists``); the lists must
    already exclude ``seen``, as the blend asks its sources to."""
    cols = [dict(normalise(lst, normalisation)) for lst in lists]
    asins = sorted(set().union(*cols)) if cols else []
    row = {a: i for i, a in enumerate(asins)}
    matrix = np.zeros((len(asins), len(cols)))
    for j, col in enumerate(cols):
        for a, v in col.items():
            matrix[row[a], j] = v
    t_fb = fallback.get(target)
    seen_before = sum(1 for a in seen if fallback.get(a) < t_fb)
    return UserCase(matrix=matrix, target_row=row.get(target, -1),
                    candidate_fallback=np.asarray([fallback.get(a) for a in asins], dtype=np.int64),
                    target_fallback=t_fb, target_unseen_rank=t_fb - seen_before,
                    target_seen=target in seen)


def target_position(case: UserCase, weights: np.ndarray, k: int) -> int | None:
    """0-based position of the target in the user's top ``k`` under ``weights``; None when absent."""
    if case.target_seen:
        return None
    scores = case.matrix @ weights if case.matrix.size else np.zeros(0)
    positive = scores > 0
    n_pos = int(positive.sum())
    t = case.target_row
    if t >= 0 and scores[t] > 0:
        st = scores[t]
        pos = int((scores > st).sum()) + int((scores[:t] == st).sum())
        return pos if pos < k else None
    if n_pos >= k or case.target_fallback == MISSING:
        return None
    # The fill is the fallback list without the seen items and without the blended ones: those the
    # fallback ranks before the target move it up.
    before = int((positive & (case.candidate_fallback < case.target_fallback)).sum()) if n_pos else 0
    pos = n_pos + case.target_unseen_rank - before
    return pos if pos < k else None


def ndcg(cases: Sequence[UserCase], weights: np.ndarray, k: int) -> float:
    """Mean NDCG@k over the cases (one relevant item each: ``1 / log2(position + 2)``)."""
    if not cases:
        return 0.0
    total = 0.0
    for case in cases:
        pos = target_position(case, weights, k)
        if pos is not None:
            total += 1.0 / math.log2(pos + 2)
    return total / len(cases)


@dataclass
class AscentResult:
    weights: np.ndarray
    score: float
    start: int
    trace: list[tuple[int, float, float]] = field(default_factory=list)  # (source, weight, score)


def ascend(score: Callable[[np.ndarray], float], *, n_sources: int, grid: Sequence[float] = WEIGHT_GRID,
           rounds: int = 3) -> AscentResult:
    """Best single source first (a one-hot vector), then one weight at a time over ``grid``, strict
    improvements of ``score(weights)`` only: the result is never worse than the best single source.
    The one coordinate ascent of the project (the ranking core's blend uses it too)."""
    eye = np.eye(n_sources)
    singles = [score(eye[j]) for j in range(n_sources)]
    start = int(np.argmax(singles)) if singles else 0
    weights = eye[start].copy() if n_sources else np.zeros(0)
    best = singles[start] if singles else 0.0
    result = AscentResult(weights=weights.copy(), score=best, start=start)
    for _ in range(rounds):
        improved = False
        for j in range(n_sources):
            for w in grid:
                if w == weights[j]:
                    continue
                trial = weights.copy()
                trial[j] = w
                if not trial.any():
                    continue
                value = score(trial)
                if value > best + 1e-12:
                    best, weights, improved = value, trial, True
                    result.trace.append((j, float(w), value))
        if not improved:
            break
    result.weights, result.score = weights, best
    return result


def coordinate_ascent(cases: Sequence[UserCase], *, n_sources: int, k: int, grid: Sequence[float] = WEIGHT_GRID,
                      rounds: int = 3) -> AscentResult:
    """:func:`ascend` on the validation NDCG@k of the blend over ``cases``."""
    return ascend(lambda w: ndcg(cases, w, k), n_sources=n_sources, grid=grid, rounds=rounds)
