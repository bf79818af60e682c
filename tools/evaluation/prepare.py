"""Work shared by several strategies and metrics, done once per run: embeddings, vocabulary, profiles."""
from __future__ import annotations

import time
from collections.abc import Sequence

from shared.logging import get_logger
from shared.vocab import DEFAULT_K, build_vocabulary, item_vocab_text
from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy

log = get_logger(__name__)


def prepare_context(ctx: EvalContext, strategies: Sequence[OfflineStrategy], users: Sequence[str]) -> None:
    """Catalogue embeddings (diversity and AvgCosSim need them), the top-K n-gram vocabulary and, when
    a strategy uses profiles, one profile per evaluated user."""
    ctx.vocab = build_vocabulary(
        (item_vocab_text(it.title, it.description) for it in ctx.catalog.items.values()), k=DEFAULT_K)
    try:
        t0 = time.perf_counter()
        if any(getattr(s, "uses_retriever", False) for s in strategies):
            from tools.evaluation.retrieval import get_retriever

            get_retriever(ctx)  # embeds the catalogue once for the index and the metrics
        ctx.ensure_item_vectors()
        ctx.cache["embed_catalog_seconds"] = time.perf_counter() - t0
    except Exception as e:  # reported: strategies that need vectors fail on their own, loudly
        ctx.notes.append(f"item embeddings could not be computed ({type(e).__name__}: {e}); "
                         "intra_list_diversity and avg_cos_sim are absent")
        log.warning("no item embeddings", extra={"error": str(e)})
        return
    if any(getattr(s, "uses_profiles", False) for s in strategies):
        from tools.evaluation.profiles import profile_offline_users

        try:
            profile_offline_users(ctx, users)
        except Exception as e:
            ctx.notes.append(f"profiles could not be built ({type(e).__name__}: {e}); "
                             "strategies that need them are reported as failed")
            log.exception("profiles failed")
