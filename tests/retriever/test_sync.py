"""Embedding items: what is embedded, and how a change of text changes the indexed vector."""

from __future__ import annotations

import numpy as np

from services.retriever.index import IndexConfig, IndexSnapshot
from services.retriever.sync import embed_items
from shared.amazon import ItemIn
from shared.embeddings import Encoder


def test_replacing_an_items_text_changes_its_vector(encoder: Encoder) -> None:
    before = ItemIn(parent_asin="X1", title="Stainless steel chef knife", features=["razor sharp blade"])
    after = before.model_copy(
        update={"title": "Cotton baby blanket", "features": ["soft and warm for infants"]}
    )
    (v1,), (v2,) = embed_items([before], encoder), embed_items([after], encoder)
    assert v1.content_hash != v2.content_hash
    assert float(v1.vector @ v2.vector) < 0.6
    assert abs(float(np.linalg.norm(v2.vector)) - 1.0) < 1e-4
    query = encoder.encode(["a blanket for my newborn"])[0]
    config = IndexConfig()
    snap = IndexSnapshot.build([v1], dim=encoder.dim, model_name=encoder.model_name, config=config)
    score_before = snap.search(query, 1)[0][1]
    snap2 = snap.with_updates([v2], config=config)
    assert snap2.search(query, 1)[0][1] > score_before + 0.2
