"""One training run end to end: lease, load, split, fit, evaluate, refit, write, promote, publish.

A run never leaves half a model serving: factors, top-N rows and (``ALS_NEIGHBOURS``) the per-item
co-review and transition lists (:mod:`services.als.neighbours`) are written under the new version
while it is still ``training``; the status flip (old live -> retired, new -> live) and the
models.v1 outbox row happen in one transaction at the very end. Any exception marks the version
``failed`` with its cause and the live version keeps serving.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from services.als import store
from services.als.config import AlsSettings
from services.als.data import clean_ratings, leave_last_out, make_split, read_reviews
from services.als.evaluation import evaluate
from services.als.model import AlsParams, FittedModel, fit
from services.als.trigger import mark_started
from shared import outbox
from shared.db import session_scope
from shared.events import MODELS, ModelEvent
from shared.logging import get_logger
from shared.models import AlsModel

log = get_logger(__name__)

CV_BEST_KEY = "cv_best"
PROMOTION_METRIC = {"explicit": ("rmse", "lower"), "implicit": ("recall_at_10", "higher")}


@dataclass
class TrainResult:
    status: str  # live | rejected | failed | skipped
    kind: str
    run_id: str
    version: int | None = None
    promoted: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_params(
    settings: AlsSettings, *, implicit: bool, overrides: dict[str, Any] | None = None
) -> AlsParams:
    """Settings defaults, then the last stored cross-validation best, then explicit overrides."""
    values = settings.default_params()
    values.update(store.read_state(settings.database_url, CV_BEST_KEY).get("params", {}))
    values.update(overrides or {})
    values["implicit"] = implicit
    return AlsParams.from_dict(values)


def gate_factors(train: Any, *, params: AlsParams, spark: Any) -> dict[str, Any]:
    """Whether the explicit model keeps its factors: fit on a leave-last-out split of ``train`` and
    compare the validation RMSE with the user+item bias baseline of the same fit (issue 13: the bias
    baseline is the floor). Implicit models rank and are not gated."""
    if params.implicit:
        return {"factors": "kept", "reason": "implicit model (ranking)"}
    inner = leave_last_out(train)
    if inner.test.empty:
        return {"factors": "kept", "reason": "no validation users"}
    m = evaluate(fit(inner.train, params=params, spark=spark), inner.test)
    keep = float(m["rmse"]) < float(m["rmse_bias"])
    return {"factors": "kept" if keep else "dropped", "validation_rmse": round(float(m["rmse"]), 6),
            "validation_rmse_bias": round(float(m["rmse_bias"]), 6),
            "reason": "factors lower the validation RMSE" if keep else "the biases alone predict better"}


def should_promote(
    *, kind: str, new: dict[str, Any], live: dict[str, Any] | None, tolerance: float
) -> tuple[bool, str]:
    """Promote unless the new model is worse than the live one on its own held-out split."""
    if live is None:
        return True, "first model of its kind"
    key, better = PROMOTION_METRIC[kind]
    if key not in live:
        return True, f"live model has no {key}"
    if key not in new:
        return False, f"new model has no {key} to compare"
    new_v, live_v = float(new[key]), float(live[key])
    if better == "lower":
        ok = new_v <= live_v * (1.0 + tolerance)
    else:
        ok = new_v >= live_v * (1.0 - tolerance)
    verdict = "not worse than" if ok else "worse than"
    return ok, f"{key} {new_v:.4f} {verdict} live {live_v:.4f}"


class _Heartbeat:
    """Renews the training lease while the run is alive, so a crashed run's lease simply expires."""

    def __init__(self, settings: AlsSettings, owner: str) -> None:
        self._settings, self._owner = settings, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="als-lease", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(1.0, self._settings.ALS_LOCK_TTL_S / 3)
        while not self._stop.wait(interval):
            try:
                store.renew_lease(
                    self._settings.database_url, owner=self._owner, ttl_s=self._settings.ALS_LOCK_TTL_S
                )
            except Exception:
                log.exception("lease renewal failed", extra={"owner": self._owner})


def run_training(
    settings: AlsSettings,
    *,
    run_id: str | None = None,
    implicit: bool = False,
    params: dict[str, Any] | None = None,
    spark: Any = None,
) -> TrainResult:
    """Train one model version under the training lease; returns what happened (never raises for a
    failed fit: the failure is recorded on the version row)."""
    run_id = run_id or uuid.uuid4().hex
    kind = "implicit" if implicit else "explicit"
    url = settings.database_url
    if not store.acquire_lease(url, owner=run_id, ttl_s=settings.ALS_LOCK_TTL_S):
        holder = store.lease_holder(url)
        log.info("training skipped: already running", extra={"run_id": run_id, "holder": holder})
        return TrainResult(status="skipped", kind=kind, run_id=run_id, reason=f"already running ({holder})")
    try:
        mark_started(settings, run_id)  # the trigger may queue the next run from now on
        with _Heartbeat(settings, run_id):
            return _train_locked(settings, run_id=run_id, implicit=implicit, overrides=params, spark=spark)
    finally:
        store.release_lease(url, owner=run_id)


def _train_locked(
    settings: AlsSettings, *, run_id: str, implicit: bool, overrides: dict[str, Any] | None, spark: Any
) -> TrainResult:
    url = settings.database_url
    kind = "implicit" if implicit else "explicit"
    als_params = resolve_params(settings, implicit=implicit, overrides=overrides)
    version = store.create_version(url, kind=kind, params=als_params.to_dict(), run_id=run_id)
    log.info(
        "training started",
        extra={"version": version, "kind": kind, "run_id": run_id, "params": als_params.to_dict()},
    )
    try:
        return _train_version(settings, version=version, run_id=run_id, params=als_params, spark=spark)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.error(
            "training failed",
            extra={"version": version, "run_id": run_id, "error": error, "traceback": traceback.format_exc()},
        )
        store.mark_failed(url, version=version, error=error)
        store.drop_artifacts(url, versions=[version])
        return TrainResult(
            status="failed",
            kind=kind,
            run_id=run_id,
            version=version,
            params=als_params.to_dict(),
            error=error,
        )


def _train_version(
    settings: AlsSettings, *, version: int, run_id: str, params: AlsParams, spark: Any
) -> TrainResult:
    from services.als.spark import get_spark

    url = settings.database_url
    timings: dict[str, float] = {}
    t = time.perf_counter()
    reviews = read_reviews(settings)
    ratings = clean_ratings(reviews)
    timings["load_s"] = time.perf_counter() - t
    if len(ratings) < settings.ALS_MIN_RATINGS:
        raise ValueError(f"only {len(ratings)} ratings; need at least {settings.ALS_MIN_RATINGS}")
    spark = spark or get_spark(settings)

    t = time.perf_counter()
    split = make_split(ratings, kind=settings.ALS_SPLIT, test_fraction=settings.ALS_TEST_FRACTION)
    gate = gate_factors(split.train, params=params, spark=spark) if settings.ALS_FACTOR_GATE else None
    held_out = fit(split.train, params=params, spark=spark)
    if gate is not None and gate["factors"] == "dropped":
        held_out = held_out.without_factors()
    metrics: dict[str, Any] = evaluate(held_out, split.test)
    metrics.update(split.describe())
    if gate is not None:
        metrics["factor_gate"] = gate
    timings["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model: FittedModel = fit(ratings, params=params, spark=spark) if settings.ALS_REFIT_ON_ALL else held_out
    if gate is not None and gate["factors"] == "dropped":
        model = model.without_factors()
    timings["fit_s"] = time.perf_counter() - t

    with session_scope(url) as s:
        live = store.live_model(s, kind=params.kind)
        live_version, live_metrics = (live.version, dict(live.metrics)) if live else (None, None)
    promote, reason = should_promote(
        kind=params.kind, new=metrics, live=live_metrics, tolerance=settings.ALS_PROMOTION_TOLERANCE
    )
    if promote:
        t = time.perf_counter()
        store.write_factors(url, version=version, model=model)
        store.write_top_n(url, version=version, model=model, n=settings.ALS_TOP_N)
        timings["write_s"] = time.perf_counter() - t
        if settings.ALS_NEIGHBOURS:
            t = time.perf_counter()
            metrics["neighbours"] = write_neighbour_lists(settings, version=version, reviews=reviews, spark=spark)
            timings["neighbours_s"] = time.perf_counter() - t
    metrics["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    metrics["promotion"] = reason

    status, event_id = _finish(
        settings, version=version, model=model, metrics=metrics, promote=promote, expected_live=live_version
    )
    log.info(
        "training finished",
        extra={
            "version": version,
            "status": status,
            "reason": reason,
            "rmse": metrics.get("rmse"),
            "recall_at_10": metrics.get("recall_at_10"),
        },
    )
    # Published right after the commit; if the broker is down the row stays for the outbox relay.
    outbox.publish(settings, ids=[event_id])
    return TrainResult(
        status=status,
        kind=params.kind,
        run_id=run_id,
        version=version,
        promoted=status == "live",
        metrics=metrics,
        params=params.to_dict(),
        reason=reason,
    )


def write_neighbour_lists(settings: AlsSettings, *, version: int, reviews: Any, spark: Any) -> dict[str, Any]:
    """Co-review neighbours and transitions of every item, computed in Spark from the reviews the run
    loaded (repeats included, as the retriever's sources read them) and stored under ``version``;
    returns what goes into the run's ``metrics["neighbours"]`` (the data fingerprint the retriever
    matches, the counts). When a live version (of either kind) already holds lists of exactly these
    reviews with the same settings, its rows are copied instead of counted again."""
    from services.als.neighbours import compute_neighbours, reviews_fingerprint
    from shared.neighbours import live_neighbour_versions

    t0 = time.perf_counter()
    url = settings.database_url
    fingerprint = reviews_fingerprint(reviews)
    same = {"top": settings.ALS_NEIGHBOURS_TOP, "transitions_top": settings.ALS_NEIGHBOURS_TRANSITIONS_TOP,
            "windows": sorted({int(w) for w in settings.ALS_NEIGHBOURS_WINDOWS})}
    for live_version, meta in live_neighbour_versions(url):
        if meta.get("fingerprint") == fingerprint and all(meta.get(k) == v for k, v in same.items()):
            rows = store.copy_neighbours(url, from_version=live_version, to_version=version)
            if rows == meta.get("rows"):
                return {**meta, "rows": rows, "copied_from": live_version,
                        "seconds": round(time.perf_counter() - t0, 3)}
            store.drop_neighbours(url, version=version)  # pruned meanwhile: count them after all
    result = compute_neighbours(
        reviews,
        spark=spark,
        top=settings.ALS_NEIGHBOURS_TOP,
        windows=settings.ALS_NEIGHBOURS_WINDOWS,
        transitions_top=settings.ALS_NEIGHBOURS_TRANSITIONS_TOP,
    )
    rows = store.write_neighbours(url, version=version, lists=result.lists)
    return {**result.meta, "rows": rows}


def _finish(
    settings: AlsSettings,
    *,
    version: int,
    model: FittedModel,
    metrics: dict[str, Any],
    promote: bool,
    expected_live: int | None,
) -> tuple[str, int]:
    """Flip statuses and queue the models.v1 event in one transaction; returns (status, outbox id)."""
    url = settings.database_url
    kind = model.kind
    with session_scope(url) as s:
        live = store.live_model(s, kind=kind, for_update=True)
        if promote and (live.version if live else None) != expected_live:
            raise RuntimeError("the live model changed during training (lease violated)")
        row = s.get(AlsModel, version)
        assert row is not None
        row.metrics = metrics
        row.n_users, row.n_items, row.n_ratings = model.n_users, model.n_items, int(model.seen.nnz)
        row.trained_at = store._now()
        row.status = "live" if promote else "rejected"
        if promote and live is not None:
            live.status = "retired"
        s.flush()
        event = ModelEvent(
            kind=kind,
            version=version,
            promoted=promote,
            metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        )
        event_id = outbox.add(s, topic=MODELS, key=kind, payload=event.model_dump(mode="json"))
        prunable = store.prunable_versions(s, kind=kind)
    store.drop_artifacts(url, versions=prunable)
    return ("live" if promote else "rejected"), event_id

