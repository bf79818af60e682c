"""``recsys evaluate``: every strategy on the same held-out split, every metric, one report.

Pipeline: load the raw files -> split -> catalogue (+ embeddings) -> profiles (when a strategy
needs them) -> per strategy: fit, recommend in batches, explain -> metrics -> metrics.json,
report.md, charts and case studies under ``out``.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shared.config import CommonSettings, get_settings
from shared.logging import configure_logging, get_logger
from tools.evaluation.context import EvalContext
from tools.evaluation.data import OfflineCatalog, read_items, read_reviews
from tools.evaluation.scoring import stage_seconds, strategy_block
from tools.evaluation.split import SPLITS, Interaction, make_split
from tools.evaluation.strategies import ALL_STRATEGIES, make_strategy
from tools.evaluation.strategies.base import OfflineStrategy, StrategyUnavailable, UserRecs

log = get_logger(__name__)

SCHEMA_VERSION = 1


@dataclass
class StrategyRun:
    """One strategy's outcome: its recommendations, or why it could not run."""

    name: str
    strategy: OfflineStrategy | None = None
    recs: list[UserRecs] = field(default_factory=list)
    fit_seconds: float = 0.0
    error: str | None = None


def select_users(test_users: Sequence[str], *, n: int, seed: int) -> list[str]:
    """All test users (n <= 0) or a seeded random sample of n, returned sorted (deterministic)."""
    users = sorted(test_users)
    if n <= 0 or n >= len(users):
        return users
    return sorted(random.Random(seed).sample(users, n))


def _batches(seq: Sequence[str], size: int) -> list[Sequence[str]]:
    return [seq[i:i + size] for i in range(0, len(seq), max(1, size))]


def run_strategy(ctx: EvalContext, strategy: OfflineStrategy, users: Sequence[str]) -> StrategyRun:
    """Fit (timed), recommend in batches with a progress bar, add reasons, never raise."""
    result = StrategyRun(name=strategy.name, strategy=strategy)
    try:
        t0 = time.perf_counter()
        strategy.fit(ctx)
        result.fit_seconds = time.perf_counter() - t0
        bar = tqdm(total=len(users), desc=f"{strategy.name:>12}", unit="user", disable=not ctx.show_progress)
        for batch in _batches(users, strategy.batch_size):
            result.recs.extend(strategy.recommend(ctx, batch))
            bar.update(len(batch))
        bar.close()
        from tools.evaluation.explain import add_reasons

        add_reasons(ctx, strategy, result.recs)
    except StrategyUnavailable as e:
        result.error = str(e)
        log.warning("strategy unavailable", extra={"strategy": strategy.name, "error": str(e)})
    except Exception as e:  # one broken strategy must not lose the others' results
        result.error = f"{type(e).__name__}: {e}"
        log.exception("strategy failed", extra={"strategy": strategy.name})
    return result


def main(reviews: Path | str, meta: Path | str, out: Path | str, k: int = 10,
         strategies: Sequence[str] | None = None, users: int = 0, split: str = "leave-last-out",
         seed: int = 42, *, settings: CommonSettings | None = None, show_progress: bool = True,
         options: dict[str, Any] | None = None) -> int:
    """Evaluate ``strategies`` (default: all) on ``users`` test users (0 = all); 0 = success.

    Returns 2 on bad arguments or unreadable input, 1 when a requested strategy failed (the
    others are still reported), 0 otherwise. ``options`` passes strategy knobs (see
    ``tools.evaluation.strategies.make_strategy``).
    """
    names = list(strategies or ALL_STRATEGIES)
    unknown = [s for s in names if s not in ALL_STRATEGIES]
    if unknown:
        log.error("unknown strategies %s; choose from %s", ",".join(unknown), ",".join(ALL_STRATEGIES),
                  extra={"unknown": unknown})
        return 2
    if k < 1:
        log.error("k must be >= 1, got %s", k, extra={"k": k})
        return 2
    if split not in SPLITS:
        log.error("unknown split %r; choose from %s", split, ", ".join(SPLITS), extra={"split": split})
        return 2
    for path in (reviews, meta):
        if not Path(path).is_file():
            log.error("input file not found: %s", path, extra={"path": str(path)})
            return 2
    settings = settings or get_settings()
    if not logging.getLogger().handlers:  # called from the CLI: log like every other command
        configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    raw_reviews, rev_report = read_reviews(reviews)
    raw_items, item_report = read_items(meta)
    if not raw_reviews:
        log.error("no valid review in %s (%d lines skipped)", reviews, rev_report.skipped,
                  extra={"path": str(reviews)})
        return 2
    the_split = make_split([Interaction.from_review(r) for r in raw_reviews], kind=split)
    eval_users = select_users(the_split.test_users, n=users, seed=seed)
    if not eval_users:
        log.error("the split has no test user")
        return 2
    test_asins = {t.parent_asin for u in eval_users for t in the_split.test[u]}
    catalog = OfflineCatalog.build(raw_items, the_split.train, extra_asins=sorted(test_asins))
    ctx = EvalContext(split=the_split, catalog=catalog, k=k, seed=seed, settings=settings,
                      show_progress=show_progress)
    ctx.cache["options"] = dict(options or {})
    ctx.cache["inputs"] = {"reviews": rev_report.__dict__, "meta": item_report.__dict__}
    log.info("evaluation data", extra={"reviews": len(raw_reviews), "items": len(catalog),
                                       "test_users": len(the_split.test), "eval_users": len(eval_users),
                                       "cold": len(the_split.cold_users & set(eval_users))})

    from tools.evaluation.prepare import prepare_context

    built = [make_strategy(name, ctx) for name in names]
    prepare_context(ctx, built, eval_users)

    runs = [run_strategy(ctx, s, eval_users) for s in built]
    payload = build_metrics(ctx, runs, eval_users, split=split, seed=seed,
                            seconds=time.perf_counter() - started)
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")

    from tools.evaluation.report import write_report

    write_report(ctx, runs, payload, eval_users, out=out)
    log.info("evaluation written",
             extra={"out": str(out), "seconds": round(time.perf_counter() - started, 1)})
    return 1 if any(r.error for r in runs) else 0


def build_metrics(ctx: EvalContext, runs: Sequence[StrategyRun], eval_users: Sequence[str], *, split: str,
                  seed: int, seconds: float) -> dict[str, Any]:
    """The metrics.json document (shape fixed by issue 7)."""
    cold = ctx.split.cold_users & set(eval_users)
    payload: dict[str, Any] = {
        "k": ctx.k,
        "split": split,
        "n_users": len(eval_users),
        "strategies": {},
        "n_cold_users": len(cold),
        "n_warm_users": len(eval_users) - len(cold),
        "n_items": len(ctx.catalog),
        "n_train_reviews": len(ctx.split.train),
        "seed": seed,
        "schema_version": SCHEMA_VERSION,
        "embedding_model": ctx.settings.EMBEDDING_MODEL if ctx.catalog.has_vectors else None,
        "seconds_total": round(seconds, 3),
        "notes": list(ctx.notes),
        "failed": {},
        "params": {},
        "costs": {},
    }
    for run in runs:
        if run.error or run.strategy is None:
            payload["failed"][run.name] = run.error or "not run"
            continue
        payload["strategies"][run.name] = strategy_block(ctx, run.strategy, run.recs)
        payload["params"][run.name] = run.strategy.describe()
        payload["costs"][run.name] = {
            "fit_seconds": round(run.fit_seconds, 3),
            "stage_seconds_per_user": {k: round(v, 6) for k, v in stage_seconds(run.recs).items()}}
    return payload
