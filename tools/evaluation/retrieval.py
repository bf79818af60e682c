"""The retriever's offline entry point (``services.retriever.offline.OfflineRetriever``), built once per run
over the whole catalogue with the training reviews only."""
from __future__ import annotations

from typing import Any

import numpy as np

from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import StrategyUnavailable


def get_retriever(ctx: EvalContext) -> Any:
    """Build (once) the offline retriever; also gives the catalogue its embeddings (same item text)."""
    if "retriever" in ctx.cache:
        return ctx.cache["retriever"]
    try:
        from services.retriever.candidates import RankingParams
        from services.retriever.config import RetrieverSettings
        from services.retriever.offline import OfflineRetriever
    except ImportError as e:
        raise StrategyUnavailable(f"retriever library not importable: {e}") from e
    rs = ctx.service_settings(RetrieverSettings)
    retriever = OfflineRetriever.from_data(items=list(ctx.catalog.items.values()), reviews=ctx.split.train,
                                           encoder=ctx.encoder, params=RankingParams.from_settings(rs),
                                           prior_count=rs.RETRIEVER_BAYES_PRIOR_COUNT,
                                           batch_size=rs.RETRIEVER_EMBED_BATCH)
    ctx.cache["retriever"] = retriever
    if not ctx.catalog.has_vectors:
        idx = retriever.index
        ctx.catalog.set_vectors(np.stack([idx.vectors[idx.asin_slot[a]] for a in ctx.catalog.asins]))
    return retriever


def history_entries(ctx: EvalContext, user_id: str) -> list[Any]:
    from services.retriever.candidates import HistoryEntry

    return [HistoryEntry(i.parent_asin, i.rating, i.timestamp) for i in ctx.split.history(user_id)]
