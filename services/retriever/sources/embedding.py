"""Dense content neighbours: cosine between item embeddings and a recency-weighted history vector.

The vectors are the index snapshot's (``services.retriever.index``: title + features + description +
store + details, embedded by the configured sentence-transformers model), handed to the source as a
matrix with its ``parent_asin`` order; ``fit`` only keeps the rows of items that have text. A user's
vector is the sum of their last ``history_length`` item vectors weighted ``decay ** steps_from_end``;
an item's score is its cosine with it. Items without a vector score nothing, so on a catalogue without
text this source is silent like the lexical one.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from services.retriever.sources.base import (
    ItemIndex,
    ScoredSource,
    recent_rows,
)


class EmbeddingSource(ScoredSource):
    """``embedding``: items whose embedding is close to the user's recent items' embeddings."""

    name = "embedding"

    def __init__(self, *, asins: Sequence[str] = (), vectors: np.ndarray | None = None, decay: float = 1.0,
                 history_length: int = 50) -> None:
        self.decay = decay
        self.history_length = history_length
        self._asins = list(asins)
        self._vectors = vectors
        self.index = ItemIndex(())
        self.matrix = np.zeros((0, 0), dtype=np.float32)

    def fit(self, *, interactions: Sequence[Any] = (), items: Iterable[Any] = ()) -> None:
        if self._vectors is None or not self._asins:
            self.index, self.matrix = ItemIndex(()), np.zeros((0, 0), dtype=np.float32)
            return
        vecs = np.asarray(self._vectors, dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1)
        keep = {a: i for i, a in enumerate(self._asins) if norms[i] > 0}
        self.index = ItemIndex(keep)
        rows = [keep[a] for a in self.index.asins]
        self.matrix = vecs[rows] / norms[rows, None] if rows else np.zeros((0, vecs.shape[1]), dtype=np.float32)

    def scores(self, history: Sequence[str]) -> np.ndarray | None:
        rows, weights = recent_rows(self.index, history, length=self.history_length, decay=self.decay)
        if not rows:
            return None
        user = weights.astype(np.float32) @ self.matrix[rows]
        norm = float(np.linalg.norm(user))
        if norm == 0.0:
            return None
        return np.asarray(self.matrix @ (user / norm), dtype=np.float64)

