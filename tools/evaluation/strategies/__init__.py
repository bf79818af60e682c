"""The strategies ``recsys evaluate`` compares, built lazily (Spark, torch and the LLM load only when asked).

Options (``main(options=...)``): ``explain`` = "template" | "auto" (reasons for strategies that do not
write their own; auto uses the LLM when one is configured), ``als_grid`` (list of param dicts),
``llm_candidates`` (candidates handed to the LLM re-rank, default 50), ``blend_als_weight``,
``reference_tune_users`` (validation users ``popular_count`` and ``sources_blend`` tune on, default 3000).
"""
from __future__ import annotations

import importlib

from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy

ALL_STRATEGIES: dict[str, str] = {
    "popular": "tools.evaluation.strategies.popular:PopularStrategy",
    "als": "tools.evaluation.strategies.als:AlsExplicitStrategy",
    "als_implicit": "tools.evaluation.strategies.als:AlsImplicitStrategy",
    "hybrid": "tools.evaluation.strategies.ranked:RankedHybridStrategy",
    "hybrid_study": "tools.evaluation.strategies.hybrid:HybridStrategy",
    "llm_only": "tools.evaluation.strategies.llm_only:LlmOnlyStrategy",
    "blend": "tools.evaluation.strategies.blend:BlendStrategy",
    # Reference strategies (issue 13): the retriever's candidate sources alone and blended; seconds to fit.
    "popular_count": "tools.evaluation.strategies.reference:PopularCountStrategy",
    "itemknn": "tools.evaluation.strategies.reference:ItemKnnStrategy",
    "itemknn_seq": "tools.evaluation.strategies.reference:ItemKnnSeqStrategy",
    "tfidf": "tools.evaluation.strategies.reference:TfidfStrategy",
    "sources_blend": "tools.evaluation.strategies.reference:SourcesBlendStrategy",
}


def make_strategy(name: str, ctx: EvalContext) -> OfflineStrategy:
    """Instantiate one strategy; its heavy imports happen in ``fit``."""
    module, cls = ALL_STRATEGIES[name].split(":")
    strategy: OfflineStrategy = getattr(importlib.import_module(module), cls)(options=ctx.cache.get("options", {}))
    return strategy
