"""Celery worker of the profiler (queue ``profiler``; GPU nodes in production).

Reliability: ``task_acks_late`` + ``task_reject_on_worker_lost`` + ``worker_prefetch_multiplier=1``:
a job is acknowledged only after it finished, so a worker killed mid-job (OOM, node drain, SIGKILL)
leaves it unacknowledged and the broker redelivers it (Redis: after ``visibility_timeout``, set from
``PROFILER_VISIBILITY_TIMEOUT_S``; keep it above the longest job). Jobs are idempotent: they rebuild
the profile from the DB. The LLM and the encoder are loaded once per worker process.

Run: ``recsys worker profiler [--concurrency N]`` or
``celery -A services.profiler.tasks:celery_app worker -Q profiler``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown
from sqlalchemy.exc import OperationalError

from services.profiler.config import ProfilerSettings, get_settings
from shared import outbox
from shared.celery import at_worker_start, reliable_conf
from shared.logging import get_logger

log = get_logger(__name__)

TASK_NAME = "services.profiler.tasks.build_profile"


def make_celery(settings: ProfilerSettings) -> Celery:
    """A Celery app for the profiler queue (used by the worker and, to enqueue, by the trigger)."""
    app = Celery("recsys-profiler", broker=settings.celery_broker_url, backend=settings.celery_result_backend)
    app.conf.update(
        task_default_queue=settings.PROFILER_QUEUE,
        task_routes={TASK_NAME: {"queue": settings.PROFILER_QUEUE}},
        worker_concurrency=settings.PROFILER_CONCURRENCY,
        result_expires=3600,
        **reliable_conf(broker_url=settings.celery_broker_url,
                        visibility_timeout_s=settings.PROFILER_VISIBILITY_TIMEOUT_S,
                        time_limit_s=settings.PROFILER_TASK_TIME_LIMIT_S),
    )
    return app


settings = get_settings()
celery_app = make_celery(settings)

_llm: Any = None
_llm_error: str | None = None


def _get_llm() -> Any:
    """The worker process's LLM (loaded once); None when it cannot be loaded (logged, extractive)."""
    global _llm, _llm_error
    if _llm is None and _llm_error is None:
        from shared.llm import LLMUnavailable, get_llm

        try:
            _llm = get_llm(settings)
        except LLMUnavailable as exc:
            _llm_error = str(exc)
            log.error("LLM unavailable: profiles will be extractive", extra={"error": _llm_error})
    return _llm


def _warm_up() -> None:
    """Load the models when the worker process starts, not on the first job; the thread that runs the
    jobs gets ``LLM_NICE`` (profiles are background work: on a shared CPU the services go first)."""
    from shared.embeddings import get_encoder
    from shared.llm import background_priority, yield_to_foreground

    background_priority(settings.LLM_NICE, whole_process=True)
    yield_to_foreground(busy=settings.LLM_YIELD_BUSY, max_pause_s=settings.LLM_YIELD_MAX_S)

    _get_llm()
    get_encoder(settings.EMBEDDING_MODEL)


at_worker_start(_warm_up)


@worker_shutdown.connect
@worker_process_shutdown.connect
def _close_publishers(**_: Any) -> None:  # flush and close the direct-publish producer on the way out
    outbox.close_publishers()


@celery_app.task(
    name=TASK_NAME,
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=settings.PROFILER_MAX_RETRIES,
)
def build_profile(self: Any, user_ids: list[str], force: bool = False) -> dict[str, Any]:
    """Rebuild the profiles of ``user_ids`` from the DB (idempotent)."""
    from services.profiler.service import build_profiles

    rows = build_profiles(user_ids=user_ids, settings=settings, llm=_get_llm(), force=force)
    return {"written": [(r.user_id, r.version, r.status, r.source) for r in rows]}


def enqueue(app: Celery, user_ids: list[str], *, queue: str) -> None:
    """Put one job on the queue; returns once the broker holds it (raises otherwise)."""
    app.send_task(
        TASK_NAME,
        args=[list(user_ids)],
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
    )
