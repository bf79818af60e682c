"""The profiler trigger: a ``reviews.v1`` consumer that debounces per user and queues Celery jobs.

A user is queued once no new review of theirs arrived for ``PROFILER_DEBOUNCE_S`` (or, for a user
who keeps reviewing, at least every ``PROFILER_MAX_WAIT_S``); due users are grouped into jobs of up
to ``PROFILER_USERS_PER_TASK``. A burst of 20 reviews for one user therefore makes one job.

Offsets: the loop runs in deferred-commit mode (``ConsumerLoop.flush``). The committed offset of a
partition never passes the first record of a user still waiting in the debounce buffer, so a crash
loses no job: uncommitted records are re-read and the user is queued again (jobs are idempotent).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition
from prometheus_client import Counter

from services.profiler.config import ProfilerSettings, get_settings
from shared.events import REVIEWS, ReviewEvent
from shared.kafka import ConsumerLoop, decode_value, ensure_topics
from shared.logging import get_logger

log = get_logger(__name__)

JOBS_QUEUED = Counter("recsys_profiler_jobs_queued_total", "profile jobs put on the Celery queue")
USERS_QUEUED = Counter("recsys_profiler_users_queued_total", "users handed to profile jobs")
BAD_RECORDS = Counter("recsys_profiler_bad_records_total", "reviews.v1 records that could not be read")


@dataclass
class _Waiting:
    first_seen: float
    last_seen: float
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # first offset per partition


@dataclass
class Debouncer:
    """Buffers users from review records and hands due ones to ``enqueue`` (a list of user ids)."""

    enqueue: Callable[[list[str]], None]
    debounce_s: float = 2.0
    max_wait_s: float = 30.0
    users_per_task: int = 8
    clock: Callable[[], float] = time.monotonic
    _waiting: dict[str, _Waiting] = field(default_factory=dict)
    _handled: dict[TopicPartition, int] = field(default_factory=dict)  # next offset after the last seen
    _reported: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, records: list[ConsumerRecord]) -> None:
        """ConsumerLoop handler: remember each record's user (never raises on a bad record)."""
        now = self.clock()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._handled[tp] = max(self._handled.get(tp, 0), record.offset + 1)
            try:
                user_id = ReviewEvent.model_validate(decode_value(record)).user_id
            except Exception as exc:  # not ours to repair: ingest validated it; count and move on
                BAD_RECORDS.inc()
                log.warning(
                    "unreadable review event skipped",
                    extra={
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
                continue
            waiting = self._waiting.get(user_id)
            if waiting is None:
                waiting = self._waiting[user_id] = _Waiting(first_seen=now, last_seen=now)
            waiting.last_seen = now
            waiting.offsets.setdefault(tp, record.offset)

    def due(self, *, force: bool = False) -> list[str]:
        now = self.clock()
        return [
            u
            for u, w in self._waiting.items()
            if force or now - w.last_seen >= self.debounce_s or now - w.first_seen >= self.max_wait_s
        ]

    def flush(self, force: bool = False) -> dict[TopicPartition, int]:
        """Queue due users; return the partitions' offsets that are now safe to commit."""
        due = self.due(force=force)
        for start in range(0, len(due), self.users_per_task):
            chunk = due[start : start + self.users_per_task]
            self.enqueue(chunk)  # raises if the broker did not take it: those users stay waiting
            JOBS_QUEUED.inc()
            USERS_QUEUED.inc(len(chunk))
            for user_id in chunk:
                del self._waiting[user_id]
            log.info("profile job queued", extra={"users": len(chunk)})
        safe: dict[TopicPartition, int] = {}
        for tp, handled in self._handled.items():
            held = [w.offsets[tp] for w in self._waiting.values() if tp in w.offsets]
            offset = min(held) if held else handled
            if self._reported.get(tp) != offset:
                safe[tp] = offset
        self._reported.update(safe)
        return safe


def _provisional_then_enqueue(app: Any, users: list[str], *, settings: ProfilerSettings,
                              enqueue: Callable[..., None]) -> None:
    if settings.PROFILER_PROVISIONAL:
        from services.profiler.service import write_provisional

        try:
            write_provisional(user_ids=users, settings=settings)
        except Exception:  # the LLM job below still builds the profile
            log.exception("provisional profiles failed", extra={"users": len(users)})
    enqueue(app, users, queue=settings.PROFILER_QUEUE)


def make_trigger(settings: ProfilerSettings, *, celery_app: Any = None) -> tuple[ConsumerLoop, Debouncer]:
    """The trigger's consumer loop and debouncer (``loop.run()`` blocks; ``loop.stop()`` ends it)."""
    from services.profiler.tasks import enqueue, make_celery

    app = celery_app or make_celery(settings)
    debouncer = Debouncer(
        enqueue=lambda users: _provisional_then_enqueue(app, users, settings=settings, enqueue=enqueue),
        debounce_s=settings.PROFILER_DEBOUNCE_S,
        max_wait_s=settings.PROFILER_MAX_WAIT_S,
        users_per_task=settings.PROFILER_USERS_PER_TASK,
    )
    loop = ConsumerLoop(
        settings=settings,
        topics=[REVIEWS],
        group_id=settings.PROFILER_GROUP,
        handler=debouncer.add,
        flush=debouncer.flush,
        name="profiler-trigger",
        poll_timeout_ms=int(min(500, max(50, settings.PROFILER_DEBOUNCE_S * 250))),
    )
    return loop, debouncer


def run(*, settings: ProfilerSettings | None = None) -> int:
    """``recsys consume profiler-trigger``: run until SIGTERM (queued users are flushed on the way out)."""
    settings = settings or get_settings()
    ensure_topics(settings, [REVIEWS])
    loop, _ = make_trigger(settings)
    loop.install_signal_handlers()
    loop.run()
    return 0
