"""Item-to-item co-review neighbours: cosine over the binary user x item matrix.

``sim(i, j) = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` with ``U_i`` the users who reviewed ``i``; each item
keeps its ``neighbours`` best. A user's score for item ``j`` is the recency-weighted sum of
``sim(h, j)`` over their last ``history_length`` items ``h`` (weight ``decay ** steps_from_end``, so
``decay = 1`` is plain item-KNN).

The same matrix can come from the Spark training job's stored lists (:meth:`CoReviewSource.from_lists`,
``shared.neighbours``): the job computes exactly these numbers, so a source built from them scores
like one fitted here on the same reviews.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from services.retriever.sources.base import (
    Candidates,
    ItemIndex,
    ScoredSource,
    matrix_from_lists,
    matrix_lists,
    recent_rows,
    row_candidates,
    user_sequences,
    weighted_rows,
)


def keep_top_per_row(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Each row's ``n`` largest entries (ties by column, the lower asin wins); the rest dropped."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    keep = np.zeros(data.size, dtype=bool)
    for r in range(matrix.shape[0]):
        start, end = indptr[r], indptr[r + 1]
        if end - start <= n:
            keep[start:end] = True
            continue
        seg = data[start:end]
        order = np.lexsort((indices[start:end], -seg))[:n]
        keep[start + order] = True
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    new_indptr = kept_before[indptr]
    return sp.csr_matrix((data[keep], indices[keep], new_indptr), shape=matrix.shape)


class CoReviewSource(ScoredSource):
    """``coreview``: items reviewed by the same users as the user's recent items."""

    name = "coreview"

    def __init__(self, *, neighbours: int = 100, decay: float = 1.0, history_length: int = 50) -> None:
        self.neighbours = neighbours
        self.decay = decay
        self.history_length = history_length
        self.index = ItemIndex(())
        self.similarity: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, *, interactions: Sequence[Any], items: Iterable[Any] = ()) -> None:
        seqs = user_sequences(interactions)
        self.index = ItemIndex(a for s in seqs.values() for a in s)
        rows: list[int] = []
        cols: list[int] = []
        for u, seq in enumerate(seqs.values()):
            for c in set(self.index.rows(seq)):  # binary: a repeated review is one co-review
                rows.append(u)
                cols.append(c)
        n = len(self.index)
        x = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(seqs), n))
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        counts = np.asarray(x.sum(axis=0)).ravel()
        inv = sp.diags(1.0 / np.sqrt(np.maximum(counts, 1.0)))
        self.similarity = keep_top_per_row((inv @ co @ inv).tocsr(), self.neighbours)

    @classmethod
    def from_lists(cls, lists: Mapping[str, Sequence[tuple[str, float]]], *, items: Iterable[str] = (),
                   **params: Any) -> CoReviewSource:
        """A source whose similarity matrix is ``lists`` (``asin -> [(asin, cosine), ...]``, as
        :meth:`as_lists` gives and the training job stores); ``items``: more items of the index (an
        item with no neighbours still has a row)."""
        source = cls(**params)
        source.use_lists(lists, items=items)
        return source

    def use_lists(self, lists: Mapping[str, Sequence[tuple[str, float]]], *, items: Iterable[str] = ()) -> None:
        """Take the similarity matrix from stored lists instead of fitting it (they hold at most
        ``self.neighbours`` per item: the caller checks they were computed with that many)."""
        self.index = ItemIndex([*lists, *(a for pairs in lists.values() for a, _ in pairs), *items])
        self.similarity = matrix_from_lists(self.index, lists)

    def as_lists(self) -> dict[str, list[tuple[str, float]]]:
        """Every item's kept neighbours, best first (ties by asin): the stored form."""
        return matrix_lists(self.similarity, self.index)

    def neighbours_of(self, asin: str, k: int = 10) -> Candidates:
        """The item's best co-review neighbours (what ``fit`` kept), best first."""
        return row_candidates(self.similarity, self.index, asin, k)

    def scores(self, history: Sequence[str]) -> np.ndarray | None:
        """Dense scores over ``self.index`` (None when no history item is known)."""
        rows, weights = recent_rows(self.index, history, length=self.history_length, decay=self.decay)
        if not rows:
            return None
        return weighted_rows(self.similarity, rows, weights)

