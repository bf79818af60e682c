"""The outbox: the one way every writer (ingest, profiler, ALS) gets an event to Kafka.

* :func:`add` writes an event in the caller's transaction, beside the change it announces.
* :func:`publish` sends given rows right after the commit (a writer's fast path) and marks them
  published; on any failure they stay pending for the relay.
* :class:`OutboxRelay` publishes every pending row in id order and marks it published (the ingest
  processes run it, so it is everyone's backstop).

Relay rounds:

One round = one transaction: claim up to N pending rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several replicas split the work; on SQLite, the embedded single-machine mode, only the process holding
a lock file next to the database relays, the others stand by), send them, wait for the broker's acks,
mark the acknowledged ones published, commit. If the broker is down the rows stay pending and the relay
retries with exponential backoff: accepted data is never lost.

Duplicates are bounded: a send that fails mid-round still waits for the sends before it (the producer
is flushed before it is reset), so every event the broker acked is marked and only the rest are
resent; and a round is at most ``batch`` events (100 by default), so a crash between the broker's
acks and the commit republishes at most that many (at-least-once; events carry a stable
``event_id`` and every consumer upserts). ``recsys_outbox_republished_total`` counts resends of
events that had been sent before.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from kafka import KafkaProducer
from prometheus_client import Counter, Gauge
from sqlalchemy import Text, cast, func, or_, select, update
from sqlalchemy.orm import Session

from shared.config import CommonSettings
from shared.db import session_scope
from shared.events import ALL_TOPICS
from shared.kafka import ensure_topics, make_producer, transient_error
from shared.logging import get_logger
from shared.models import OutboxEvent, utcnow

log = get_logger(__name__)

PUBLISHED = Counter("recsys_outbox_published_total", "outbox events published to Kafka", ["topic"])
FAILURES = Counter("recsys_outbox_publish_failures_total", "relay rounds that failed (broker down, ...)")
UNSENDABLE_MARK = "unsendable: "
UNSENDABLE = Counter("recsys_outbox_unsendable_total", "outbox events the broker refused (they stay pending)")
REPUBLISHED = Counter(
    "recsys_outbox_republished_total", "events sent again after an earlier send of theirs was not confirmed"
)
PENDING = Gauge("recsys_outbox_pending", "outbox events not yet published (sampled by the relay)")


class RelayError(RuntimeError):
    """A round could not publish every event it claimed (the rest stay pending)."""


class OutboxRelay:
    """Publishes the outbox; ``publish_pending()`` for one round, ``start()`` for a background thread."""

    def __init__(
        self,
        *,
        settings: CommonSettings,
        name: str = "outbox-relay",
        batch: int = 100,
        interval_s: float = 0.2,
        max_backoff_s: float = 30.0,
        flush_timeout_s: float = 15.0,
    ) -> None:
        self.settings = settings
        self.name = name
        self.batch, self.interval_s = batch, interval_s
        self.max_backoff_s, self.flush_timeout_s = max_backoff_s, flush_timeout_s
        self._producer: KafkaProducer | None = None
        self._topics_ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._leader_file: IO[bytes] | None = None
        self.last_error: str | None = None

    # -- one round -------------------------------------------------------------------------------

    def _get_producer(self) -> KafkaProducer:
        if not self._topics_ready:
            # A dev broker restarted with memory storage has lost its topics: create them (with their
            # partition count) before any producer metadata request could auto-create them otherwise.
            ensure_topics(self.settings, ALL_TOPICS)
            self._topics_ready = True
        if self._producer is None:
            flush_ms = int(self.flush_timeout_s * 1000)
            self._producer = make_producer(
                self.settings,
                linger_ms=2,
                batch_size=256 * 1024,
                # Every send resolves (acked or failed) before flush() gives up, so a round knows
                # exactly which events reached the broker.
                request_timeout_ms=min(10_000, flush_ms // 2),
                delivery_timeout_ms=max(flush_ms - 2_000, min(10_000, flush_ms // 2) + 100),
            )
        return self._producer

    def _reset_producer(self) -> None:
        producer, self._producer, self._topics_ready = self._producer, None, False
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # closing a producer whose broker vanished may itself fail
                log.debug("producer close failed", exc_info=True)

    def is_leader(self) -> bool:
        """PostgreSQL: always (rows are locked per round). SQLite: whoever holds the relay lock file."""
        url = self.settings.database_url
        if not url.startswith("sqlite"):
            return True
        if self._leader_file is None:
            path = Path(url.split("///", 1)[-1] + ".relay.lock")
            fh = open(path, "ab")  # noqa: SIM115 - held for the life of the process
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                return False
            self._leader_file = fh
            log.info("outbox relay is the SQLite leader", extra={"relay": self.name, "lock": str(path)})
        return True

    def _claim(self, session: Session, limit: int, ids: Sequence[int] | None) -> list[Any]:
        q = (
            # The payload as stored JSON text: no decode/re-encode round trip per event.
            select(
                OutboxEvent.id,
                OutboxEvent.topic,
                OutboxEvent.key,
                cast(OutboxEvent.payload, Text).label("payload"),
                OutboxEvent.attempts,
            )
            .where(OutboxEvent.published_at.is_(None))
            .where(or_(OutboxEvent.last_error.is_(None), ~OutboxEvent.last_error.startswith(UNSENDABLE_MARK)))
            .order_by(OutboxEvent.id)
            .limit(limit)
        )
        if ids is not None:
            q = q.where(OutboxEvent.id.in_(list(ids)))
        if session.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        return list(session.execute(q))

    def publish_pending(self, *, limit: int | None = None, ids: Sequence[int] | None = None) -> int:
        """Publish one round of pending events (only ``ids`` when given); returns how many. Raises if
        any send failed.

        Events the broker acked are marked published even when others in the round failed, so a
        retry resends only what is missing (no duplicates from a half-failed round). Given ``ids``
        are a writer's own rows: sent without the SQLite leader check.
        """
        limit = limit or self.batch
        if ids is None and not self.is_leader():
            return 0
        error: BaseException | None = None
        with session_scope(self.settings.database_url) as session:
            rows = self._claim(session, limit, ids)
            if not rows:
                return 0
            sent: list[tuple[Any, Any]] = []
            unsendable: dict[int, str] = {}
            producer: KafkaProducer | None = None
            try:
                producer = self._get_producer()
                for r in rows:
                    try:
                        fut = producer.send(self.settings.topic(r.topic), key=r.key, value=r.payload.encode())
                    except Exception as exc:
                        if transient_error(exc):
                            raise
                        unsendable[r.id] = f"{UNSENDABLE_MARK}{type(exc).__name__}: {exc}"  # e.g. too large
                        continue
                    sent.append((r, fut))
                producer.flush(timeout=self.flush_timeout_s)
            except Exception as exc:  # broker down: metadata or flush timeout
                error = exc
                if producer is not None and sent:
                    # Sends before the failing one may still be delivered: wait for their outcome so
                    # every acked event is marked (otherwise the retry would publish it twice).
                    try:
                        producer.flush(timeout=self.flush_timeout_s)
                    except Exception:
                        log.debug("flush after a failed send failed", exc_info=True)
            acked = [r for r, fut in sent if fut.is_done and fut.succeeded()]
            if error is None and len(acked) < len(sent):
                failed = next((fut for _, fut in sent if fut.is_done and fut.failed()), None)
                error = failed.exception if failed is not None else TimeoutError("sends not acknowledged")
            acked_ids = {r.id for r in acked}
            unacked = [r.id for r, _ in sent if r.id not in acked_ids]
            if acked:
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id.in_(acked_ids))
                    .values(published_at=utcnow(), attempts=OutboxEvent.attempts + 1, last_error=None)
                )
            if unacked:  # sent, outcome unknown: a later round that sends them again counts a resend
                session.execute(
                    update(OutboxEvent).where(OutboxEvent.id.in_(unacked)).values(attempts=OutboxEvent.attempts + 1)
                )
            for row_id, reason in unsendable.items():
                # Stays in the outbox (never dropped) with its error, and is left out of later rounds so it
                # holds back nothing; clear its last_error to retry it (e.g. after raising the broker's
                # message size limit).
                session.execute(update(OutboxEvent).where(OutboxEvent.id == row_id).values(last_error=reason[:2000]))
                UNSENDABLE.inc()
                log.error("outbox event cannot be published", extra={"relay": self.name, "id": row_id,
                                                                     "error": reason})
        REPUBLISHED.inc(sum(1 for r in acked if (r.attempts or 0) > 0))
        for r in acked:
            PUBLISHED.labels(r.topic).inc()
        if error is not None:
            raise RelayError(
                f"{len(sent) - len(acked)} of {len(rows)} events not published: "
                f"{type(error).__name__}: {error}"
            ) from error
        return len(acked)

    def _record_failure(self, error: BaseException) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        FAILURES.inc()
        try:
            with session_scope(self.settings.database_url) as session:
                first = session.scalar(
                    select(func.min(OutboxEvent.id))
                    .where(OutboxEvent.published_at.is_(None))
                    .where(or_(OutboxEvent.last_error.is_(None), ~OutboxEvent.last_error.startswith(UNSENDABLE_MARK)))
                )
                if first is not None:
                    session.execute(
                        update(OutboxEvent)
                        .where(OutboxEvent.id == first)
                        .values(last_error=self.last_error[:2000])
                    )
        except Exception:
            log.warning("could not record relay failure", exc_info=True)

    def pending(self) -> int:
        with session_scope(self.settings.database_url) as session:
            n = (
                session.scalar(
                    select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
                )
                or 0
            )
        PENDING.set(n)
        return int(n)

    def drain(self, *, timeout_s: float = 60.0) -> int:
        """Publish until nothing is pending (tests, CLI); returns events published. Raises on timeout."""
        total, deadline = 0, time.monotonic() + timeout_s
        while True:
            try:
                n = self.publish_pending()
            except Exception:
                self._reset_producer()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            total += n
            if n == 0:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"outbox not drained after {timeout_s}s ({total} published)")

    # -- background thread -----------------------------------------------------------------------

    def run(self) -> None:
        """Loop until ``stop()``: publish, sleep when idle, back off exponentially while failing."""
        backoff = 0.5
        last_sample = 0.0
        log.info("outbox relay started", extra={"relay": self.name})
        while not self._stop.is_set():
            try:
                n = self.publish_pending()
                if backoff > 0.5:
                    log.info("outbox relay recovered", extra={"relay": self.name})
                backoff = 0.5
                self.last_error = None
                if time.monotonic() - last_sample > 5:
                    last_sample = time.monotonic()
                    self.pending()
                if n == 0:
                    self._stop.wait(self.interval_s)
            except Exception as exc:
                self._reset_producer()
                self._record_failure(exc)
                log.warning(
                    "outbox relay round failed; retrying",
                    extra={"relay": self.name, "error": self.last_error, "retry_in_s": backoff},
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        self._reset_producer()
        self._release_leadership()
        log.info("outbox relay stopped", extra={"relay": self.name})

    def start(self) -> OutboxRelay:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, *, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        self._reset_producer()
        self._release_leadership()

    def _release_leadership(self) -> None:
        if self._leader_file is not None:
            self._leader_file.close()  # releases the flock: a standby relay takes over
            self._leader_file = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def add(session: Session, *, topic: str, key: str | None, payload: dict[str, Any]) -> int:
    """Write one event in the caller's transaction (logical topic name, JSON payload); returns its id."""
    row = OutboxEvent(topic=topic, key=key, payload=payload)
    session.add(row)
    session.flush()
    return int(row.id)


_publishers: dict[tuple[str, str, str], OutboxRelay] = {}
_publishers_lock = threading.Lock()


def publish(settings: CommonSettings, *, ids: Sequence[int], flush_timeout_s: float = 10.0) -> int:
    """Publish these committed outbox rows now and mark them published; returns how many were sent.

    Never raises: on any failure (broker down) the rows stay pending and the relay publishes them.
    """
    if not ids:
        return 0
    # One publisher per (broker, database, topic prefix): a publisher applies its own settings' prefix.
    key = (settings.KAFKA_BOOTSTRAP, settings.database_url, settings.TOPIC_PREFIX)
    with _publishers_lock:
        publisher = _publishers.get(key)
        if publisher is None:
            publisher = _publishers[key] = OutboxRelay(
                settings=settings, name="outbox-publish", flush_timeout_s=flush_timeout_s
            )
    try:
        return publisher.publish_pending(ids=ids, limit=len(ids))
    except Exception as exc:
        log.warning(
            "direct publish failed; left to the outbox relay",
            extra={"error": f"{type(exc).__name__}: {exc}", "events": len(ids)},
        )
        publisher._reset_producer()
        return 0


def close_publishers() -> None:
    """Close the producers :func:`publish` keeps (worker shutdown, end of a test session)."""
    with _publishers_lock:
        publishers = list(_publishers.values())
        _publishers.clear()
    for p in publishers:
        p._reset_producer()
