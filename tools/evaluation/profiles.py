"""User profiles for the evaluation, built by the profiler's own library code.

``services.profiler.history.build_history`` selects the reviews, ``profiles_from_histories``
generates the structured profile and the three-sentence summary in LLM batches (validated,
grounded, with the profiler's extractive fallback), and the profile text is embedded with the
services' encoder, exactly like the profiler worker does. The LLM follows ``RECSYS_LLM_BACKEND``
(``template`` = no LLM: extractive profiles); a configured LLM that cannot load raises.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from shared.logging import get_logger
from tools.evaluation.context import EvalContext, UserProfile
from tools.evaluation.strategies.base import StrategyUnavailable

log = get_logger(__name__)


def profiler_llm(ctx: EvalContext) -> Any | None:
    """The profiler's LLM, or None when the settings say template-only."""
    if ctx.settings.LLM_BACKEND == "template":
        return None
    from services.profiler.config import ProfilerSettings
    from shared.llm import get_llm

    return get_llm(ctx.service_settings(ProfilerSettings))


def profile_offline_users(ctx: EvalContext, users: Sequence[str]) -> None:
    """Fill ``ctx.profiles`` and ``ctx.profile_seconds_per_user`` for ``users``."""
    try:
        from services.profiler.config import ProfilerSettings
        from services.profiler.history import build_history
        from services.profiler.profiles import profiles_from_histories
    except ImportError as e:
        raise StrategyUnavailable(f"profiler library not importable: {e}") from e
    ps = ctx.service_settings(ProfilerSettings)
    llm = profiler_llm(ctx)
    ctx.cache["profile_model"] = getattr(llm, "name", None) if llm is not None else "extractive (no LLM)"
    titles = {a: ctx.catalog.title(a) for a in ctx.catalog.asins}
    bar = tqdm(total=len(users), desc="    profiles", unit="user", disable=not ctx.show_progress)
    batch = max(1, ps.LLM_BATCH_SIZE)
    for start in range(0, len(users), batch):
        chunk = list(users[start:start + batch])
        t0 = time.perf_counter()
        histories = [build_history(u, [_review(i) for i in ctx.split.history(u)], titles,
                                   budget_chars=ps.PROFILER_HISTORY_CHARS,
                                   max_reviews=ps.PROFILER_MAX_REVIEWS,
                                   review_chars=ps.PROFILER_REVIEW_CHARS) for u in chunk]
        results = profiles_from_histories(histories, llm=llm, vocab=ctx.vocab,
                                          max_terms=ps.PROFILER_MAX_TERMS,
                                          max_new_tokens=ps.PROFILER_MAX_NEW_TOKENS,
                                          summary_tokens=ps.PROFILER_SUMMARY_TOKENS)
        ready = [r for r in results if r.status == "ready"]
        vectors: Any = ctx.encoder.encode([r.text() for r in ready]) if ready else []
        by_user = {r.user_id: v for r, v in zip(ready, vectors, strict=True)}
        seconds = (time.perf_counter() - t0) / len(chunk)
        for r in results:
            p = r.profile
            cold = r.status != "ready"
            positive = [*p.preferred_products, *p.liked_features, *p.potential_interests]
            ctx.profiles[r.user_id] = UserProfile(
                user_id=r.user_id, cold=cold, terms=[] if cold else p.terms(),
                positive_terms=[] if cold else positive,
                structured=None if cold else p.to_dict(), summary=None if cold else r.summary,
                text="" if cold else r.text(), source=f"{r.source}/{r.summary_source}",
                vector=by_user.get(r.user_id))
            ctx.profile_seconds_per_user[r.user_id] = seconds
        bar.update(len(chunk))
    bar.close()
    n_llm = sum(1 for p in ctx.profiles.values() if p.source.startswith("llm"))
    log.info("profiles built", extra={"users": len(users), "llm_profiles": n_llm,
                                      "cold": sum(1 for p in ctx.profiles.values() if p.cold)})


def _review(i: Any) -> dict[str, Any]:
    return {"user_id": i.user_id, "parent_asin": i.parent_asin, "rating": i.rating, "timestamp": i.timestamp,
            "title": i.title, "text": i.text}
