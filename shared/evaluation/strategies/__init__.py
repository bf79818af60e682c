"""The strategies ``recsys evaluate`` compares, built lazily (Spark, torch and the LLM load only when asked).

Options (``main(options=...)``): ``explain`` = "template" | "auto" (reasons for strategies that do not
write their own; auto uses the LLM when one is configured), ``als_grid`` (list of param dicts),
``llm_candidates`` (candidates handed to the LLM re-rank, default 50), ``blend_als_weight``.
"""
from __future__ import annotations

import importlib

from shared.evaluation.context import EvalContext
from shared.evaluation.strategies.base import Strategy

ALL_STRATEGIES: dict[str, str] = {
    "popular": "shared.evaluation.strategies.popular:PopularStrategy",
    "als": "shared.evaluation.strategies.als:AlsExplicitStrategy",
    "als_implicit": "shared.evaluation.strategies.als:AlsImplicitStrategy",
    "hybrid": "shared.evaluation.strategies.hybrid:HybridStrategy",
    "llm_only": "shared.evaluation.strategies.llm_only:LlmOnlyStrategy",
    "blend": "shared.evaluation.strategies.blend:BlendStrategy",
}


def make_strategy(name: str, ctx: EvalContext) -> Strategy:
    """Instantiate one strategy; its heavy imports happen in ``fit``."""
    module, cls = ALL_STRATEGIES[name].split(":")
    strategy: Strategy = getattr(importlib.import_module(module), cls)(options=ctx.cache.get("options", {}))
    return strategy
