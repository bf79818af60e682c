"""Retriever test fixtures: ONE real encoder per session, synthetic data with planted tastes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from services.retriever.offline import OfflineRetriever, history_from_reviews
from shared.config import CommonSettings
from shared.embeddings import Encoder, get_encoder
from tools.synth import generate


class CountingEncoder:
    """The real encoder, counting how many texts it was asked to embed (restart tests)."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.model_name = inner.model_name
        self.texts = 0

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.encode(list(texts), batch_size=batch_size)


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return get_encoder(CommonSettings().EMBEDDING_MODEL)


@pytest.fixture(scope="session")
def synth() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(reviews, meta, truth): 120 items in 10 families, users with planted favourite families."""
    return generate(users=200, items=120, seed=3)


@pytest.fixture(scope="session")
def offline(encoder: Encoder, synth: Any) -> OfflineRetriever:
    reviews, meta, _ = synth
    return OfflineRetriever.from_data(items=meta, reviews=reviews, encoder=encoder)


@pytest.fixture(scope="session")
def histories(synth: Any) -> dict[str, Any]:
    return history_from_reviews(synth[0])
