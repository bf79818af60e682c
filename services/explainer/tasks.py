"""The explainer worker (``recsys worker explainer``; the GPU pool in production): the only process that
runs the explainer's LLM.

The serving explainer (``EXPLAINER_LLM_WORKER``, the default) loads no model. It answers every request at
once from what this worker stored (reasons in the reason cache, llm_only re-ranks in ``reranks``) and
templates, and queues what is missing here through :class:`CeleryJobs`:

* ``write_reasons``: the LLM slogans of (user, profile version, items) into the reason cache;
* ``write_rerank``: the llm_only re-rank of a user's candidates under (user, profile version, catalog
  version, model);
* ``precompute``: a ready profile (``profiles.v1``): both of the above for the user's current hybrid top
  items and llm_only candidates, asked of the retriever like any client.

Two queues: ``EXPLAINER_QUEUE`` (what a request asked for) and ``EXPLAINER_PRECOMPUTE_QUEUE`` (what a
profile event queued). The worker consumes both and takes them in turn, so a request's job waits behind at
most one precompute job, however many a bulk load queued. Jobs are idempotent (each first reads what is
stored and does only what is missing) and acknowledged late: a worker killed mid-job leaves the job to be
delivered again. The model is loaded when the worker starts; one that cannot be loaded stops it.

Run: ``recsys worker explainer`` or ``celery -A services.explainer.tasks:celery_app worker -Q
explainer,explainer-precompute``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init
from prometheus_client import Counter

from services.explainer.config import ExplainerSettings, get_settings
from services.explainer.service import PRECOMPUTED, REQUESTED, Explainer, RerankKey
from shared.logging import get_logger

log = get_logger(__name__)

TASK_REASONS = "services.explainer.tasks.write_reasons"
TASK_RERANK = "services.explainer.tasks.write_rerank"
TASK_PRECOMPUTE = "services.explainer.tasks.precompute"

ENQUEUED = Counter(
    "recsys_explainer_jobs_enqueued_total", "Jobs sent to the explainer worker", ["task", "result"]
)  # sent | deduplicated | dropped (too many sends waiting) | failed (the broker refused)

#: marks kept for deduplication at most (the oldest go first)
MAX_MARKS = 50_000


def make_celery(settings: ExplainerSettings) -> Celery:
    """The Celery app of the explainer worker's queues (the worker runs it, the serving explainer sends)."""
    app = Celery("recsys-explainer", broker=settings.celery_broker_url, backend=settings.celery_result_backend)
    app.conf.update(
        task_default_queue=settings.EXPLAINER_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.EXPLAINER_TASK_TIME_LIMIT_S,
        task_soft_time_limit=max(5, settings.EXPLAINER_TASK_TIME_LIMIT_S - 30),
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # the effect is the stored reason or re-rank; nobody waits on results
        broker_transport_options=({
            "visibility_timeout": settings.EXPLAINER_VISIBILITY_TIMEOUT_S,
            # sweep for abandoned jobs often enough that a short visibility timeout means fast recovery
            "unacked_restore_interval": max(1, min(10, settings.EXPLAINER_VISIBILITY_TIMEOUT_S // 2)),
            "unacked_restore_throttle": 1,
        } if settings.celery_broker_url.startswith(("redis", "rediss")) else {}),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


class CeleryJobs:
    """The serving explainer's side (:class:`services.explainer.service.RemoteJobs`): each ask returns at
    once; one thread sends the jobs to the broker, so a slow or unreachable broker never holds a request.
    A key this replica queued is not queued again for ``EXPLAINER_JOB_TTL_S`` unless asked at a better
    priority (a request's ask for a key a profile event queued goes to the request queue)."""

    def __init__(self, settings: ExplainerSettings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery(settings)
        self._marks: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._waiting = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explainer-enqueue")

    def _claim(self, mark: str, priority: int) -> bool:
        now = time.monotonic()
        with self._lock:
            held = self._marks.get(mark)
            if held is not None and held[1] > now and held[0] <= priority:
                return False
            self._marks[mark] = (priority, now + self.settings.EXPLAINER_JOB_TTL_S)
            self._marks.move_to_end(mark)
            while len(self._marks) > MAX_MARKS:
                self._marks.popitem(last=False)
        return True

    def forget(self, key: Any) -> None:
        with self._lock:
            self._marks.pop(repr(key), None)

    def _send(self, task: str, *, priority: int, key: Any, args: list[Any]) -> bool:
        short = task.rsplit(".", 1)[-1]
        mark = repr(key)
        if not self._claim(mark, priority):
            ENQUEUED.labels(short, "deduplicated").inc()
            return True
        with self._lock:
            if self._waiting >= max(1, self.settings.EXPLAINER_BACKGROUND_QUEUE):
                self._marks.pop(mark, None)
                ENQUEUED.labels(short, "dropped").inc()
                return False
            self._waiting += 1
        queue = self.settings.EXPLAINER_PRECOMPUTE_QUEUE if priority >= PRECOMPUTED else self.settings.EXPLAINER_QUEUE
        try:
            self._pool.submit(self._publish, task, queue, args, mark)
        except RuntimeError:  # shutting down
            with self._lock:
                self._waiting -= 1
                self._marks.pop(mark, None)
            return False
        return True

    def _publish(self, task: str, queue: str, args: list[Any], mark: str) -> None:
        short = task.rsplit(".", 1)[-1]
        try:
            self.app.send_task(task, args=args, queue=queue, retry=True,
                               retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                             "interval_max": 1})
            ENQUEUED.labels(short, "sent").inc()
        except Exception as e:  # the next ask queues it again; the request was answered with templates
            with self._lock:
                self._marks.pop(mark, None)
            ENQUEUED.labels(short, "failed").inc()
            log.warning("explainer job not queued", extra={"task": short, "error": str(e)[:300]})
        finally:
            with self._lock:
                self._waiting -= 1

    def reasons(self, *, priority: int, user_id: str | None, profile_version: int, terms: list[str],
                items: Sequence[Any], key: Any) -> bool:
        return self._send(TASK_REASONS, priority=priority, key=("reasons", *key),
                          args=[user_id, profile_version, list(terms), [_dump(i) for i in items], priority])

    def rerank(self, *, priority: int, key: RerankKey, summary: str | None, candidates: Sequence[Any],
               k: int) -> bool:
        return self._send(TASK_RERANK, priority=priority, key=key,
                          args=[list(key), summary, [_dump(c) for c in candidates], k, priority])

    def precompute(self, *, user_id: str, version: int) -> bool:
        return self._send(TASK_PRECOMPUTE, priority=PRECOMPUTED, key=("precompute", user_id, version),
                          args=[user_id, version])

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _dump(item: Any) -> Any:
    dump = getattr(item, "model_dump", None)
    return dump(mode="json") if callable(dump) else dict(item)


# ------------------------------------------------------------------ the worker

settings = get_settings()
celery_app = make_celery(settings)
#: what ``recsys worker explainer`` consumes: requests' jobs, then profile events' jobs, in turn
QUEUES = [settings.EXPLAINER_QUEUE, settings.EXPLAINER_PRECOMPUTE_QUEUE]

_explainer: Explainer | None = None
_explainer_lock = threading.Lock()


def worker_explainer() -> Explainer:
    """The worker process's explainer: the model loaded once, jobs run in the task's thread. A model that
    cannot be loaded raises (shared.llm.LLMUnavailable), and so does a worker configured template-only."""
    global _explainer
    with _explainer_lock:
        if _explainer is None:
            from services.explainer.service import load_reasoner
            from services.explainer.store import ReasonCache, RerankStore

            reasoner = load_reasoner(settings=settings)
            if reasoner is None:
                raise RuntimeError("the explainer worker needs an LLM: RECSYS_LLM_BACKEND / "
                                   "RECSYS_EXPLAINER_BACKEND are set to template")
            db_url = settings.database_url if settings.EXPLAINER_DB_CACHE else None
            _explainer = Explainer(settings=settings, reasoner=reasoner,
                                   cache=ReasonCache(database_url=db_url, lru_size=settings.EXPLAINER_CACHE_SIZE),
                                   reranks=RerankStore(database_url=db_url, lru_size=settings.EXPLAINER_CACHE_SIZE),
                                   direct=True)
        return _explainer


def _warm_up() -> None:
    """Load the model when the worker starts, not on the first job; the whole process runs at
    ``LLM_NICE`` (on a shared CPU, the services' requests go first)."""
    from shared.llm import background_priority

    background_priority(settings.LLM_NICE, whole_process=True)
    worker_explainer()


@worker_process_init.connect
def _warm_up_child(**_: Any) -> None:  # prefork: each child loads its own model
    _warm_up()


@worker_init.connect
def _warm_up_solo(sender: Any = None, **_: Any) -> None:  # solo pool: the main process runs the jobs
    if "solo" in str(getattr(sender, "pool_cls", "")).lower():
        _warm_up()


@celery_app.task(name=TASK_REASONS, acks_late=True)
def write_reasons(user_id: str | None, profile_version: int, terms: list[str], items: list[dict[str, Any]],
                  priority: int = REQUESTED) -> dict[str, Any]:
    """The LLM reasons of ``items`` that the cache lacks, written to it."""
    from services.explainer.schemas import ItemFacts

    facts = [ItemFacts.model_validate(i) for i in items]
    n = worker_explainer().in_background(user_id=user_id, profile_version=profile_version, terms=terms,
                                         items=facts, priority=priority)
    return {"items": n}


@celery_app.task(name=TASK_RERANK, acks_late=True)
def write_rerank(key: list[Any], summary: str | None, candidates: list[dict[str, Any]], k: int,
                 priority: int = REQUESTED) -> dict[str, Any]:
    """The llm_only re-rank of ``candidates`` under ``key``, unless it is stored already."""
    from services.explainer.schemas import ItemFacts

    cands = [ItemFacts.model_validate(c) for c in candidates]
    uid, version, catalog, model = key
    ok = worker_explainer().rerank_in_background((str(uid), int(version), str(catalog), str(model)),
                                                 summary=summary, candidates=cands, k=k, priority=priority)
    return {"queued": ok}


@celery_app.task(name=TASK_PRECOMPUTE, acks_late=True)
def precompute(user_id: str, version: int) -> dict[str, Any]:
    """A ready profile: the user's llm_only re-rank and the reasons of their hybrid top items."""
    return {"items": worker_explainer().precompute(user_id=user_id, version=version)}
