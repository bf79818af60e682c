"""``hybrid``: the retriever's ranking core (``services.retriever.ranking``) fitted on the training part.

The core does its own temporal validation inside ``train`` (each user's newest training item), exactly
as the retriever's training does on the live data, so this is the served ranking measured offline.
Its sources: co-review neighbours, transitions, TF-IDF, item embeddings (only items with text get a
vector; the catalogue's configured encoder) and popular; its model: LightGBM LambdaRank or a tuned
blend, whichever cross-fits better on validation. Options: ``core_embeddings`` (default True),
``reference_tune_users`` (validation users, default 3000).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy, StageClock, UserRecs


def item_vectors(ctx: EvalContext) -> tuple[list[str], np.ndarray] | None:
    """(asins, vectors) of the catalogue items that have text; None when none has."""
    from services.retriever.sources.lexical import lexical_text

    with_text = [a for a in ctx.catalog.asins if lexical_text(ctx.catalog.items[a]).strip()]
    if not with_text:
        return None
    ctx.ensure_item_vectors()
    return with_text, ctx.catalog.vectors_of(with_text)


class RankedHybridStrategy(OfflineStrategy):
    name = "hybrid"
    # the served hybrid's reasons are written from the user's profile (the study's ad slogans), so the
    # profile metrics apply; the ranking itself reads the history only
    uses_profiles = True
    explain_default = "auto"
    batch_size = 256

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}
        self.core: Any = None

    def fit(self, ctx: EvalContext) -> None:
        from services.retriever.ranking import RankingCore, default_factories

        vectors = item_vectors(ctx) if self.options.get("core_embeddings", True) else None
        self.core = RankingCore.fit(
            interactions=ctx.split.train, items=ctx.catalog.items.values(), k=ctx.k,
            factories=default_factories(vectors=vectors),
            tune_users=int(self.options.get("reference_tune_users", 3000)), seed=ctx.seed)

    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        out = []
        for user in user_ids:
            clock = StageClock()
            with clock.stage("rank"):
                history = [i.parent_asin for i in ctx.split.history(user)]
                ranked = self.core.rank(history=history, k=ctx.k, exclude=ctx.seen(user))
            out.append(UserRecs(user_id=user, items=[r.parent_asin for r in ranked],
                                scores=[r.score for r in ranked], cold=not history,
                                stage_seconds=clock.per_user(1),
                                extra={"sources": [r.source for r in ranked]}))
        return out

    def describe(self) -> dict[str, Any]:
        return dict(self.core.report) if self.core is not None else {}
