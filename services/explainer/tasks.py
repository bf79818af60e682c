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
from prometheus_client import Counter

from services.explainer.config import ExplainerSettings, get_settings
from services.explainer.service import PRECOMPUTED, REQUESTED, Explainer, RerankKey
from shared.celery import at_worker_start, reliable_conf
from shared.logging import get_logger

log = get_logger(__name__)

TASK_REASONS = "services.explainer.tasks.write_reasons"
TASK_RERANK = "services.explainer.tasks.write_rerank"
TASK_PRECOMPUTE = "services.explainer.tasks.precompute"
TASK_BATCH = "services.explainer.tasks.run_batch"
#: jobs per broker message at most
BATCH = 32

ENQUEUED = Counter(
    "recsys_explainer_jobs_enqueued_total", "Jobs sent to the explainer worker", ["task", "result"]
)  # sent | deduplicated | dropped (too many sends waiting) | failed (the broker refused)

#: marks kept for deduplication at most (the oldest go first)
MAX_MARKS = 50_000


def make_celery(settings: ExplainerSettings) -> Celery:
    """The Celery app of the explainer worker's queues (the worker runs it, the serving explainer sends)."""
    # no result backend: the effect of a job is what it stores, and nobody waits on results
    app = Celery("recsys-explainer", broker=settings.celery_broker_url)
    app.conf.update(
        task_default_queue=settings.EXPLAINER_QUEUE,
        **reliable_conf(broker_url=settings.celery_broker_url,
                        visibility_timeout_s=settings.EXPLAINER_VISIBILITY_TIMEOUT_S,
                        time_limit_s=settings.EXPLAINER_TASK_TIME_LIMIT_S),
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
        self._outbox: list[tuple[str, str, list[Any], str]] = []  # (queue, task, args, mark) not sent yet
        self._flushing = False
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
        queue = self.settings.EXPLAINER_PRECOMPUTE_QUEUE if priority >= PRECOMPUTED else self.settings.EXPLAINER_QUEUE
        with self._lock:
            if self._waiting >= max(1, self.settings.EXPLAINER_BACKGROUND_QUEUE):
                self._marks.pop(mark, None)
                ENQUEUED.labels(short, "dropped").inc()
                return False
            self._waiting += 1
            self._outbox.append((queue, task, args, mark))
            flush = not self._flushing
            self._flushing = True
        if flush:
            try:
                self._pool.submit(self._flush)
            except RuntimeError:  # shutting down
                with self._lock:
                    self._flushing = False
                return False
        return True

    def _flush(self) -> None:
        """Send what waits, a batch of up to ``BATCH`` request jobs per message: a broker send costs
        milliseconds of CPU (the embedded SQLite transport: 3 ms), so a burst of first requests (every
        user's reasons at once) is a few sends, not one per request."""
        while True:
            with self._lock:
                todo, self._outbox = self._outbox, []
                if not todo:
                    self._flushing = False
                    return
            by_queue: dict[str, list[tuple[str, list[Any], str]]] = {}
            for queue, task, args, mark in todo:
                by_queue.setdefault(queue, []).append((task, args, mark))
            for queue, jobs in by_queue.items():
                # precompute jobs one per message: the worker takes its two queues in turn, so a request's
                # job waits behind one precompute job, not a batch of them
                size = 1 if queue == self.settings.EXPLAINER_PRECOMPUTE_QUEUE else BATCH
                for start in range(0, len(jobs), size):
                    self._publish(queue, jobs[start : start + size])

    def _publish(self, queue: str, jobs: list[tuple[str, list[Any], str]]) -> None:
        try:
            body = [[task, [_dump_arg(a) for a in args]] for task, args, _ in jobs]
            self.app.send_task(TASK_BATCH, args=[body], queue=queue, retry=True,
                               retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                             "interval_max": 1})
            for task, _, _ in jobs:
                ENQUEUED.labels(task.rsplit(".", 1)[-1], "sent").inc()
        except Exception as e:  # the next ask queues them again; the requests were answered with templates
            with self._lock:
                for _, _, mark in jobs:
                    self._marks.pop(mark, None)
            for task, _, _ in jobs:
                ENQUEUED.labels(task.rsplit(".", 1)[-1], "failed").inc()
            log.warning("explainer jobs not queued", extra={"jobs": len(jobs), "error": str(e)[:300]})
        finally:
            with self._lock:
                self._waiting -= len(jobs)

    def reasons(self, *, priority: int, user_id: str | None, profile_version: int, terms: list[str],
                items: Sequence[Any], key: Any) -> bool:
        return self._send(TASK_REASONS, priority=priority, key=("reasons", *key),
                          args=[user_id, profile_version, list(terms), list(items), priority])

    def rerank(self, *, priority: int, key: RerankKey, summary: str | None, candidates: Sequence[Any],
               k: int) -> bool:
        return self._send(TASK_RERANK, priority=priority, key=key,
                          args=[list(key), summary, list(candidates), k, priority])

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
    return dump(mode="json") if callable(dump) else item


def _dump_arg(arg: Any) -> Any:
    """A job argument as JSON: lists of items (pydantic models) are dumped on the send thread, not in
    the request."""
    return [_dump(a) for a in arg] if isinstance(arg, list) else arg


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
    from shared.llm import background_priority, yield_to_foreground

    background_priority(settings.LLM_NICE, whole_process=True)
    yield_to_foreground(busy=settings.LLM_YIELD_BUSY, max_pause_s=settings.LLM_YIELD_MAX_S)
    worker_explainer()


at_worker_start(_warm_up)


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


_JOBS = {TASK_REASONS: write_reasons, TASK_RERANK: write_rerank, TASK_PRECOMPUTE: precompute}


@celery_app.task(name=TASK_BATCH, acks_late=True)
def run_batch(jobs: list[list[Any]]) -> dict[str, int]:
    """The jobs the serving explainer sent together (``[[task name, args], ...]``), one after another; a
    job that fails is logged and the others still run (each is idempotent, so a batch delivered again
    after a crash redoes only what is not stored)."""
    done = failed = 0
    for name, args in jobs:
        fn = _JOBS.get(str(name))
        if fn is None:
            log.warning("unknown explainer job", extra={"task": str(name)[:100]})
            failed += 1
            continue
        try:
            fn(*args)
            done += 1
        except Exception:
            failed += 1
            log.exception("explainer job failed", extra={"task": name})
    return {"done": done, "failed": failed}
