"""Celery: the ``als.train`` task on queue ``als`` and the periodic retraining (beat) schedule.

Run with ``recsys worker als [--beat]``. A task takes the training lease itself (re-entrant when the
HTTP API already took it for the same run id), so beat, the review trigger and admins can all ask
for a training at once and exactly one runs; the others return ``skipped``.
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from celery import Celery

from services.als.config import AlsSettings, get_settings
from shared.logging import get_logger

log = get_logger(__name__)

QUEUE = "als"
TASK_NAME = "als.train"


def make_celery(settings: AlsSettings) -> Celery:
    app = Celery("recsys-als", broker=settings.celery_broker_url, backend=settings.celery_result_backend)
    app.conf.update(
        task_default_queue=QUEUE,
        task_routes={"als.*": {"queue": QUEUE}},
        task_acks_late=True,  # a worker that dies mid-training gets the task redelivered
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        timezone="UTC",
    )
    if settings.ALS_RETRAIN_INTERVAL_S > 0:
        app.conf.beat_schedule = {
            "als-periodic-retrain": {
                "task": TASK_NAME,
                "schedule": float(settings.ALS_RETRAIN_INTERVAL_S),
                "options": {"queue": QUEUE},
            },
        }
    app.task(name=TASK_NAME, bind=True)(_train_task)
    return app


def _train_task(self: Any, run_id: str | None = None, implicit: bool = False) -> dict[str, Any]:
    """Train one model version (explicit, or implicit) and return the run's outcome."""
    from services.als.training import run_training

    settings = get_settings()
    result = run_training(settings, run_id=run_id or self.request.id or uuid.uuid4().hex, implicit=implicit)
    log.info(
        "als task done", extra={"run_id": result.run_id, "status": result.status, "version": result.version}
    )
    return result.to_dict()


@lru_cache(maxsize=8)
def _app_for(broker: str, backend: str) -> Celery:
    return make_celery(AlsSettings(CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND=backend))


def enqueue_training(settings: AlsSettings, *, run_id: str, implicit: bool = False) -> str:
    """Send one ``als.train`` task to the ``als`` queue; the Celery task id is the run id."""
    app = _app_for(settings.celery_broker_url, settings.celery_result_backend)
    app.send_task(TASK_NAME, kwargs={"run_id": run_id, "implicit": implicit}, queue=QUEUE, task_id=run_id)
    log.info("training enqueued", extra={"run_id": run_id, "implicit": implicit})
    return run_id


celery_app = make_celery(get_settings())
train_als = celery_app.tasks[TASK_NAME]
