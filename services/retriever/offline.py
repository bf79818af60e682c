"""Retrieval over in-memory data, without a running stack (offline evaluation, notebooks, tests).

    retriever = OfflineRetriever.from_data(items=meta, reviews=train_reviews, encoder=get_encoder(name))
    result = retriever.candidates(strategy="hybrid", user_id=uid, history=history_of(uid), k=10)

``items`` / ``reviews`` may be ``ItemIn`` / ``ReviewIn`` objects, ORM rows, dicts or DataFrames.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.retriever.candidates import (
    CandidateResult,
    CandidateStrategy,
    HistoryEntry,
    RankingParams,
    TextEncoder,
    UserSignals,
    generate_candidates,
)
from services.retriever.catalog import Catalog
from services.retriever.index import IndexConfig, IndexSnapshot
from services.retriever.sync import embed_items, encoder_name
from shared.amazon import ItemIn


def _as_item(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return ItemIn.model_validate(obj)
    return obj


def history_from_reviews(reviews: Iterable[Any]) -> dict[str, tuple[HistoryEntry, ...]]:
    """Group reviews (objects or dicts with user_id, parent_asin, rating, timestamp) by user."""
    out: dict[str, list[HistoryEntry]] = {}
    for r in reviews:
        row: Mapping[str, Any] = (
            r
            if isinstance(r, Mapping)
            else vars(r)
            if hasattr(r, "__dict__")
            else {k: getattr(r, k) for k in ("user_id", "parent_asin", "rating", "timestamp")}
        )
        out.setdefault(str(row["user_id"]), []).append(
            HistoryEntry(str(row["parent_asin"]), float(row["rating"]), int(row["timestamp"]))
        )
    return {u: tuple(sorted(h, key=lambda e: e.timestamp)) for u, h in out.items()}


@dataclass
class OfflineRetriever:
    index: IndexSnapshot
    catalog: Catalog
    encoder: TextEncoder
    params: RankingParams

    @classmethod
    def from_data(
        cls,
        *,
        items: Iterable[Any],
        reviews: Any = (),
        encoder: TextEncoder,
        params: RankingParams | None = None,
        config: IndexConfig | None = None,
        prior_count: float = 10.0,
        batch_size: int = 64,
    ) -> OfflineRetriever:
        """Embed every item and build the index and the catalog (stats from metadata and reviews)."""
        item_list = [_as_item(i) for i in (items.to_dict("records") if hasattr(items, "to_dict") else items)]
        vectors = embed_items(item_list, encoder, batch_size=batch_size)
        index = IndexSnapshot.build(
            vectors, dim=encoder.dim, model_name=encoder_name(encoder), config=config or IndexConfig()
        )
        catalog = Catalog.from_items(item_list, reviews, prior_count=prior_count)
        return cls(index=index, catalog=catalog, encoder=encoder, params=params or RankingParams())

    def candidates(
        self,
        *,
        strategy: CandidateStrategy = "hybrid",
        user_id: str | None = None,
        history: Sequence[HistoryEntry] = (),
        profile_text: str | None = None,
        profile_vector: np.ndarray | None = None,
        k: int = 10,
        exclude: Iterable[str] = (),
        als_candidates: Sequence[tuple[str, float]] | None = None,
    ) -> CandidateResult:
        user = UserSignals(
            user_id=user_id, history=tuple(history), profile_vector=profile_vector, profile_text=profile_text
        )
        return generate_candidates(
            strategy=strategy,
            index=self.index,
            catalog=self.catalog,
            user=user,
            k=k,
            params=self.params,
            exclude=exclude,
            als_candidates=als_candidates,
            encoder=self.encoder,
        )
