"""Sequential transitions: "reviewed next after X", both directions, from each user's sequence.

Every user's training items are put in time order (ties by ``parent_asin``, exactly as the evaluation
splits). Each item followed by another within ``window`` steps is a forward transition ``a -> b``
(weight ``1 / steps``); the same pair read backwards is ``b -> a``. Each direction is row-normalised
into "what comes next / came before, given ``a``". A user's score for ``j`` sums, over their last
``history_length`` items ``h`` weighted ``decay ** steps_from_end``,
``forward_weight * P(next = j | h) + backward_weight * P(before = j | h)``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from services.retriever.sources.base import (
    Candidates,
    ItemIndex,
    ScoredSource,
    recent_rows,
    row_candidates,
    user_sequences,
)


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    return (sp.diags(inv) @ matrix).tocsr()


class TransitionSource(ScoredSource):
    """``transitions``: what users reviewed right after (and right before) the user's last items."""

    name = "transitions"

    def __init__(self, *, forward_weight: float = 1.0, backward_weight: float = 0.5, decay: float = 0.5,
                 history_length: int = 5, window: int = 1) -> None:
        self.forward_weight = forward_weight
        self.backward_weight = backward_weight
        self.decay = decay
        self.history_length = history_length
        self.window = window
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
        self.forward = _row_normalised(counts)
        self.backward = _row_normalised(counts.T.tocsr())

    def next_of(self, asin: str, k: int = 10) -> Candidates:
        """``P(next = j | asin)``, best first."""
        return row_candidates(self.forward, self.index, asin, k)

    def scores(self, history: Sequence[str]) -> np.ndarray | None:
        rows, weights = recent_rows(self.index, history, length=self.history_length, decay=self.decay)
        if not rows:
            return None
        out = np.zeros(len(self.index))
        if self.forward_weight:
            out += self.forward_weight * np.asarray(self.forward[rows].T @ weights).ravel()
        if self.backward_weight:
            out += self.backward_weight * np.asarray(self.backward[rows].T @ weights).ravel()
        return out

