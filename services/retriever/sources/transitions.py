"""Sequential transitions: "reviewed next after X", both directions, from each user's sequence.

Every user's training items are put in time order (ties by ``parent_asin``, exactly as the evaluation
splits). Each item followed by another within ``window`` steps is a forward transition ``a -> b``
(weight ``1 / steps``); the same pair read backwards is ``b -> a``. Each direction is row-normalised
into "what comes next / came before, given ``a``". A user's score for ``j`` sums, over their last
``history_length`` items ``h`` weighted ``decay ** steps_from_end``,
``forward_weight * P(next = j | h) + backward_weight * P(before = j | h)``.

``neighbours`` (None: all) keeps each row's best ``neighbours`` entries after the normalisation (the
stored lists' top N). The matrices can come from the Spark training job's stored lists
(:meth:`TransitionSource.from_lists`, ``shared.neighbours``), which hold exactly these numbers.
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
from services.retriever.sources.coreview import keep_top_per_row


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    return (sp.diags(inv) @ matrix).tocsr()


class TransitionSource(ScoredSource):
    """``transitions``: what users reviewed right after (and right before) the user's last items."""

    name = "transitions"

    def __init__(self, *, forward_weight: float = 1.0, backward_weight: float = 0.5, decay: float = 0.5,
                 history_length: int = 5, window: int = 1, neighbours: int | None = None) -> None:
        self.forward_weight = forward_weight
        self.backward_weight = backward_weight
        self.decay = decay
        self.history_length = history_length
        self.window = window
        self.neighbours = neighbours
        self.index = ItemIndex(())
        self.forward: sp.csr_matrix = sp.csr_matrix((0, 0))
        self.backward: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, *, interactions: Sequence[Any], items: Iterable[Any] = ()) -> None:
        seqs = user_sequences(interactions)
        self.index = ItemIndex(a for s in seqs.values() for a in s)
        src: list[int] = []
        dst: list[int] = []
        val: list[float] = []
        for seq in seqs.values():
            rows = self.index.rows(seq)
            for i, a in enumerate(rows):
                for step in range(1, self.window + 1):
                    if i + step >= len(rows):
                        break
                    b = rows[i + step]
                    if a != b:  # a repeated review of the same item is not a transition
                        src.append(a)
                        dst.append(b)
                        val.append(1.0 / step)
        n = len(self.index)
        counts = sp.csr_matrix((np.asarray(val, dtype=np.float64), (src, dst)), shape=(n, n))  # duplicates sum
        self.forward = self._kept(_row_normalised(counts))
        self.backward = self._kept(_row_normalised(counts.T.tocsr()))

    def _kept(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        if self.neighbours is None or self.neighbours <= 0:
            return matrix
        return keep_top_per_row(matrix, self.neighbours)

    @classmethod
    def from_lists(cls, *, forward: Mapping[str, Sequence[tuple[str, float]]],
                   backward: Mapping[str, Sequence[tuple[str, float]]], items: Iterable[str] = (),
                   **params: Any) -> TransitionSource:
        """A source whose matrices are the stored lists (``asin -> [(asin, P), ...]``, as
        :meth:`as_lists` gives and the training job stores for this source's ``window``)."""
        source = cls(**params)
        source.use_lists(forward=forward, backward=backward, items=items)
        return source

    def use_lists(self, *, forward: Mapping[str, Sequence[tuple[str, float]]],
                  backward: Mapping[str, Sequence[tuple[str, float]]], items: Iterable[str] = ()) -> None:
        """Take both matrices from stored lists instead of fitting them."""
        self.index = ItemIndex([*forward, *backward, *items,
                                *(a for lists in (forward, backward) for pairs in lists.values() for a, _ in pairs)])
        self.forward = matrix_from_lists(self.index, forward)
        self.backward = matrix_from_lists(self.index, backward)

    def as_lists(self) -> tuple[dict[str, list[tuple[str, float]]], dict[str, list[tuple[str, float]]]]:
        """(forward, backward) lists of every item, best first (ties by asin): the stored form."""
        return matrix_lists(self.forward, self.index), matrix_lists(self.backward, self.index)

    def next_of(self, asin: str, k: int = 10) -> Candidates:
        """``P(next = j | asin)``, best first."""
        return row_candidates(self.forward, self.index, asin, k)

    def scores(self, history: Sequence[str]) -> np.ndarray | None:
        rows, weights = recent_rows(self.index, history, length=self.history_length, decay=self.decay)
        if not rows:
            return None
        out = np.zeros(len(self.index))
        if self.forward_weight:
            out += self.forward_weight * weighted_rows(self.forward, rows, weights)
        if self.backward_weight:
            out += self.backward_weight * weighted_rows(self.backward, rows, weights)
        return out

