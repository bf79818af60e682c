"""Blend: the hybrid pipeline with ALS candidates mixed in by the retriever (``als_weight`` of the score).

The ALS model is the one the ``als_implicit`` (default) or ``als`` strategy fitted in the same run when
it ran; otherwise it is fitted here with the same grid search. ``options["blend_als_kind"]`` picks it.
"""
from __future__ import annotations

from typing import Any

from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.als import AlsExplicitStrategy, AlsImplicitStrategy
from tools.evaluation.strategies.hybrid import HybridStrategy

ALS_CANDIDATES = 50


class BlendStrategy(HybridStrategy):
    name = "blend"
    explain_default = "template"

    def fit(self, ctx: EvalContext) -> None:
        super().fit(ctx)
        kind = str(self.options.get("blend_als_kind", "implicit"))
        key = f"als_model:{kind}"
        if key not in ctx.cache:
            als = (AlsImplicitStrategy if kind == "implicit" else AlsExplicitStrategy)(options=self.options)
            als.fit(ctx)
            ctx.cache[key] = als.model
        self.als_model = ctx.cache[key]
        self.kind = kind

    def als_candidates(self, ctx: EvalContext, user_id: str) -> list[tuple[str, float]] | None:
        if self.als_model.user_ids.get_indexer([user_id])[0] < 0:
            return None  # ALS knows nothing of a cold user: the hybrid list alone
        return self.als_model.recommend(user_id, ALS_CANDIDATES, exclude=ctx.seen(user_id))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "als_kind": getattr(self, "kind", None),
                "als_candidates": ALS_CANDIDATES}
