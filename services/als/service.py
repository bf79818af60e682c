"""The ALS service's domain functions: serving reads of the live model, model versions, starting a training.

Errors are :class:`shared.http.DomainError` subclasses (stable code + HTTP status); the routes in
:mod:`services.als.app` only call these functions.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from services.als import store
from services.als.config import AlsSettings
from services.als.schemas import ModelInfo, Recommendations, ScoredItem, TrainAccepted
from shared.db import database_check
from shared.http import DomainError, NotFound
from shared.logging import get_logger
from shared.models import AlsModel

log = get_logger(__name__)


class NoLiveModel(DomainError):
    status_code = 503
    code = "no_live_model"


class UserNotInModel(NotFound):
    code = "user_not_in_model"


class ModelNotFound(NotFound):
    code = "model_not_found"


class TrainingInProgress(DomainError):
    status_code = 409
    code = "training_in_progress"


class TrainUnavailable(DomainError):
    status_code = 503
    code = "train_unavailable"


class LiveModels:
    """The live version per kind, re-read at most every ``ttl_s`` (a promotion shows up within it)."""

    def __init__(self, settings: AlsSettings, ttl_s: float = 2.0) -> None:
        self.settings, self.ttl_s = settings, ttl_s
        self._cache: dict[str, tuple[float, AlsModel | None]] = {}

    def get(self, kind: str) -> AlsModel | None:
        hit = self._cache.get(kind)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        row = store.get_live(self.settings.database_url, kind=kind)
        self._cache[kind] = (time.monotonic(), row)
        return row


def model_info(*, row: AlsModel) -> ModelInfo:
    """One ``als_models`` row as the API shows it."""
    return ModelInfo(
        version=row.version,
        kind=row.kind,
        status=row.status,
        params=row.params or {},
        metrics=row.metrics or {},
        n_users=row.n_users,
        n_items=row.n_items,
        n_ratings=row.n_ratings,
        error=row.error,
        run_id=row.run_id,
        started_at=row.started_at.isoformat() if row.started_at else None,
        trained_at=row.trained_at.isoformat() if row.trained_at else None,
    )


def recommendations(
    *, settings: AlsSettings, live_models: LiveModels, user_id: str, k: int, kind: str | None
) -> Recommendations:
    """Top-k unseen items for a user from the (cached) live model of ``kind`` (default ALS_SERVING_KIND)."""
    kind = kind or settings.ALS_SERVING_KIND
    live = live_models.get(kind)
    if live is None:
        raise NoLiveModel(f"no live {kind} ALS model yet")
    items = store.user_recommendations(settings.database_url, version=live.version, user_id=user_id, k=k)
    if not items:
        raise UserNotInModel(f"user {user_id!r} is not in ALS model v{live.version}")
    return Recommendations(
        user_id=user_id,
        model_version=live.version,
        kind=live.kind,
        items=[ScoredItem(parent_asin=a, score=s) for a, s in items],
    )


def live_model(*, settings: AlsSettings, kind: str | None) -> ModelInfo:
    """The live version of ``kind`` (default ALS_SERVING_KIND), read now (not cached)."""
    kind = kind or settings.ALS_SERVING_KIND
    row = store.get_live(settings.database_url, kind=kind)
    if row is None:
        raise NoLiveModel(f"no live {kind} ALS model yet")
    return model_info(row=row)


def recent_models(*, settings: AlsSettings, limit: int, kind: str | None) -> list[ModelInfo]:
    """Recent versions, newest first."""
    return [model_info(row=r) for r in store.recent_versions(settings.database_url, limit=limit, kind=kind)]


def model_version(*, settings: AlsSettings, version: int) -> ModelInfo:
    row = store.get_version(settings.database_url, version)
    if row is None:
        raise ModelNotFound(f"no model version {version}")
    return model_info(row=row)


def start_training(
    *, settings: AlsSettings, implicit: bool, threads: list[threading.Thread]
) -> TrainAccepted:
    """Take the training lease for a new run id and hand the run to ``ALS_TRAIN_EXECUTOR``.

    The lease is taken here, before anything is queued, so a second request gets
    :class:`TrainingInProgress` even before a worker starts (the Celery task re-enters it by run id).
    ``thread`` runs the training in a daemon thread appended to ``threads``; ``celery`` enqueues
    ``als.train``. When the run cannot be started the lease is released (:class:`TrainUnavailable`).
    """
    run_id = uuid.uuid4().hex
    url = settings.database_url
    if not store.acquire_lease(url, owner=run_id, ttl_s=settings.ALS_LOCK_TTL_S):
        raise TrainingInProgress(f"a training is already running ({store.lease_holder(url)})")
    kind = "implicit" if implicit else "explicit"
    try:
        if settings.ALS_TRAIN_EXECUTOR == "thread":
            thread = threading.Thread(
                target=_train_in_thread,
                args=(settings, run_id, implicit),
                name=f"als-train-{run_id[:8]}",
                daemon=True,
            )
            threads.append(thread)
            thread.start()
        else:
            from services.als.tasks import enqueue_training  # builds the Celery app: only when asked

            enqueue_training(settings, run_id=run_id, implicit=implicit)
    except Exception as exc:
        store.release_lease(url, owner=run_id)
        log.exception("could not start training", extra={"run_id": run_id})
        raise TrainUnavailable(f"could not start training: {exc}") from exc
    return TrainAccepted(run_id=run_id, executor=settings.ALS_TRAIN_EXECUTOR, kind=kind)


def _train_in_thread(settings: AlsSettings, run_id: str, implicit: bool) -> None:
    from services.als.training import run_training

    try:
        run_training(settings, run_id=run_id, implicit=implicit)
    except Exception:  # run_training records fit failures itself; this is the last resort
        log.exception("training thread crashed", extra={"run_id": run_id})
        store.release_lease(settings.database_url, owner=run_id)


def readiness(*, settings: AlsSettings) -> dict[str, Any]:
    """The database check, and the live version (blocking: the app runs it in a thread)."""
    db = database_check(settings.database_url)
    live = store.get_live(settings.database_url, kind=settings.ALS_SERVING_KIND) if db["ok"] else None
    # No live model is not "unready": the API answers 503 no_live_model and callers fall back.
    return {"database": db, "live_model": {"ok": True, "version": live.version if live else None}}
