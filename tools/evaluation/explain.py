"""Reasons for strategies that do not write their own, through the explainer's library code.

``options["explain"]``: "template" (default: the explainer's grounded templates, fast and
deterministic) or "auto" (the LLM when ``RECSYS_LLM_BACKEND`` is not "template", templates for
what it does not deliver, exactly like the service).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from tools.evaluation.context import EvalContext
from tools.evaluation.strategies.base import OfflineStrategy, StrategyUnavailable, UserRecs


def get_explainer(ctx: EvalContext, backend: str) -> Any:
    key = f"explainer:{backend}"
    if key in ctx.cache:
        return ctx.cache[key]
    try:
        from services.explainer.config import ExplainerSettings
        from services.explainer.service import Explainer, load_reasoner
        from services.explainer.store import ReasonCache
    except ImportError as e:
        raise StrategyUnavailable(f"explainer library not importable: {e}") from e
    # No reason cache (every strategy pays for its own reasons), and the LLM inline: batch work
    # measures the LLM reasons themselves, not the templates a live request answers with first.
    updates: dict[str, Any] = {"EXPLAINER_DB_CACHE": False, "EXPLAINER_CACHE_SIZE": 0,
                               "EXPLAINER_INLINE_LLM": True}
    if backend == "template":
        updates["EXPLAINER_BACKEND"] = "template"
    settings = ctx.service_settings(ExplainerSettings, **updates)
    reasoner = load_reasoner(settings=settings)
    explainer = Explainer(settings=settings, reasoner=reasoner,
                          cache=ReasonCache(database_url=None, lru_size=0))
    ctx.cache[key] = explainer
    return explainer


def explain_request(ctx: EvalContext, rec: UserRecs, *, backend: str) -> Any:
    from services.explainer.schemas import ExplainRequest, ItemFacts, ProfileIn

    prof = ctx.profiles.get(rec.user_id)
    structured = prof.structured if prof is not None and not prof.cold else None
    items = [ItemFacts.model_validate({**ctx.catalog.card(a), "title": ctx.catalog.title(a)[:5000]})
             for a in rec.items]
    profile = ProfileIn.model_validate(structured) if structured else None
    return ExplainRequest(user_id=rec.user_id, profile=profile,
                          summary=(prof.summary if prof is not None and not prof.cold else None),
                          items=items, backend="template" if backend == "template" else "auto")


def add_reasons(ctx: EvalContext, strategy: OfflineStrategy, recs: Sequence[UserRecs]) -> None:
    """Fill ``rec.reasons`` where the strategy left none; the seconds go to an ``explain`` stage.

    Backend: ``options["explain"]`` when given, else the strategy's ``explain_default``."""
    backend = str(ctx.cache.get("options", {}).get("explain") or strategy.explain_default)
    todo = [r for r in recs if r.reasons is None]
    if not todo:
        return
    explainer = get_explainer(ctx, backend)

    async def _all() -> None:
        for rec in todo:
            if not rec.items:
                rec.reasons = []
                continue
            t0 = time.perf_counter()
            resp = await explainer.explain(explain_request(ctx, rec, backend=backend))
            rec.reasons = [e.reason for e in resp.explanations]
            rec.extra["reason_sources"] = [e.source for e in resp.explanations]
            rec.stage_seconds["explain"] = rec.stage_seconds.get("explain", 0.0) + time.perf_counter() - t0

    asyncio.run(_all())
