"""``recsys train-als [--cv] [--implicit] [--out DIR]``: train now against the configured database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from services.als.config import AlsSettings, get_settings
from services.als.training import CV_BEST_KEY, TrainResult, run_training
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)


def train(
    *, cv: bool = False, implicit: bool = False, out: Path | None = None, settings: AlsSettings | None = None
) -> int:
    """Optionally cross-validate, then train (and promote) the explicit model, and the implicit one."""
    from services.als.spark import get_spark, stop_spark
    from shared.db import upgrade_database
    from shared.outbox import close_publishers

    settings = settings or get_settings()
    configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    settings.ensure_home()
    upgrade_database(settings.database_url)
    out = out or settings.artifacts_dir()
    spark = get_spark(settings)
    try:
        if cv:
            try:
                _run_cv(settings, spark=spark, out=out)
            except Exception as exc:  # e.g. too little history to validate: say why, exit non-zero
                log.exception("cross-validation failed")
                typer.echo(f"cross-validation failed: {type(exc).__name__}: {exc}", err=True)
                return 1
        results = [run_training(settings, spark=spark)]
        if implicit:
            results.append(run_training(settings, implicit=True, spark=spark))
    finally:
        stop_spark()
        close_publishers()
    typer.echo(summary(results))
    failed = [r for r in results if r.status in ("failed", "skipped")]
    for r in failed:
        typer.echo(f"{r.kind} training {r.status}: {r.error or r.reason}", err=True)
    return 1 if failed else 0


def _run_cv(settings: AlsSettings, *, spark: Any, out: Path) -> None:
    from services.als import store
    from services.als.cv import GRID, best_params, cross_validate, grid_configs, write_reports
    from services.als.data import load_ratings
    from services.als.training import resolve_params

    ratings = load_ratings(settings)
    base = resolve_params(settings, implicit=False)
    grid = GRID | settings.ALS_CV_GRID
    with typer.progressbar(length=len(grid_configs(grid)), label="ALS cross-validation") as bar:
        results = cross_validate(
            ratings, base=base, spark=spark, split=settings.ALS_SPLIT, grid=grid,
            progress=lambda *_: bar.update(1),
        )
    paths = write_reports(results, out)
    best = best_params(results)
    store.write_state(
        settings.database_url,
        CV_BEST_KEY,
        {"params": best, "validation_rmse": float(results.iloc[0]["rmse"])},
    )
    typer.echo(
        f"cross-validation: best {best} (validation RMSE {results.iloc[0]['rmse']:.4f}); "
        f"reports: {', '.join(str(p) for p in paths.values())}"
    )


def summary(results: list[TrainResult]) -> str:
    """A small table: the model(s) next to the baselines on the held-out split."""

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, int | float) else "-"

    lines = [f"{'model':<34} {'RMSE':>8} {'MAE':>8} {'Recall@10':>10} {'NDCG@10':>9}"]
    for r in results:
        m = r.metrics
        if r.status in ("failed", "skipped"):
            lines.append(f"{r.kind + ' ALS':<34} {r.status}: {r.error or r.reason}")
            continue
        label = f"ALS {r.kind} v{r.version} ({r.status})"
        lines.append(
            f"{label:<34} {fmt(m.get('rmse')):>8} {fmt(m.get('mae')):>8} "
            f"{fmt(m.get('recall_at_10')):>10} {fmt(m.get('ndcg_at_10')):>9}"
        )
        if r.kind == "explicit":
            lines.append(
                f"{'  user+item bias baseline':<34} {fmt(m.get('rmse_bias')):>8} {fmt(m.get('mae_bias')):>8}"
            )
            lines.append(
                f"{'  global mean baseline':<34} {fmt(m.get('rmse_global_mean')):>8} "
                f"{fmt(m.get('mae_global_mean')):>8}"
            )
        lines.append(
            f"{'  popularity baseline':<34} {'':>8} {'':>8} {fmt(m.get('recall_at_10_popularity')):>10} "
            f"{fmt(m.get('ndcg_at_10_popularity')):>9}"
        )
        if m.get("split"):
            lines.append(
                f"  split={m.get('split')} train={m.get('train')} test={m.get('test')} "
                f"promotion: {m.get('promotion', '')}"
            )
    return "\n".join(lines)
