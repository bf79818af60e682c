"""The one Kafka client factory (kafka-python) and a consumer loop with at-least-once semantics.

Settings work against the dev broker (tansu) and a real Apache Kafka alike. Consumers commit
offsets only after the handler returned, i.e. after its effect is durable; handlers must be
idempotent (upserts), so a replay after a crash changes nothing.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, TopicAlreadyExistsError
from kafka.serializer import Serializer
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter, Gauge

from shared.config import CommonSettings
from shared.logging import get_logger

log = get_logger(__name__)


def _common(settings: CommonSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP.split(","),
        "client_id": settings.KAFKA_CLIENT_ID,
        "security_protocol": settings.KAFKA_SECURITY_PROTOCOL,
    }
    if settings.KAFKA_SASL_MECHANISM:
        conf.update(
            sasl_mechanism=settings.KAFKA_SASL_MECHANISM,
            sasl_plain_username=settings.KAFKA_SASL_USERNAME,
            sasl_plain_password=settings.KAFKA_SASL_PASSWORD,
        )
    return conf


class _JsonValue(Serializer):
    """JSON via orjson; bytes pass through unchanged (already-encoded JSON, e.g. the outbox relay's)."""

    def serialize(self, topic: str, headers: Any, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


class _StrKey(Serializer):
    def serialize(self, topic: str, headers: Any, key: Any) -> bytes | None:
        return key.encode() if isinstance(key, str) else key


def make_producer(settings: CommonSettings, **overrides: Any) -> KafkaProducer:
    conf = _common(settings) | {
        "acks": "all",
        "retries": 5,
        "linger_ms": 5,
        "max_block_ms": 5_000,  # fail fast when the broker is down; the outbox retries later
        "request_timeout_ms": 10_000,
        "value_serializer": _JsonValue(),
        "key_serializer": _StrKey(),
    }
    conf.update(overrides)
    return KafkaProducer(**conf)


def make_consumer(settings: CommonSettings, *topics: str, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    conf = _common(settings) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_interval_ms": settings.KAFKA_MAX_POLL_INTERVAL_MS,
        "session_timeout_ms": settings.KAFKA_SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": max(1000, settings.KAFKA_SESSION_TIMEOUT_MS // 3),
        "request_timeout_ms": max(30_000, settings.KAFKA_SESSION_TIMEOUT_MS + 5_000),
        "max_poll_records": 500,
    }
    conf.update(overrides)
    return KafkaConsumer(*[settings.topic(t) for t in topics], **conf)


def make_admin(settings: CommonSettings) -> KafkaAdminClient:
    return KafkaAdminClient(**_common(settings), request_timeout_ms=10_000)


def ensure_topics(settings: CommonSettings, topics: Iterable[str], *, partitions: int = 3,
                  replication: int = 1) -> None:
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(settings.topic(t), partitions, replication) for t in topics
               if settings.topic(t) not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def broker_reachable(settings: CommonSettings, timeout_s: float = 3.0) -> bool:
    try:
        admin = KafkaAdminClient(**_common(settings), request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=int(timeout_s * 1000))
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def decode_value(record: ConsumerRecord) -> Any:
    """JSON-decode a record value; raises ValueError on bad bytes (callers dead-letter it)."""
    raw = record.value
    if raw is None:
        raise ValueError("empty record value")
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8")
    return json.loads(raw)


BatchHandler = Callable[[list[ConsumerRecord]], None]

RETRIES = Counter("recsys_consumer_retries_total", "failed consumer batches retried", ["consumer", "kind"])
DEAD_LETTERS = Counter(
    "recsys_consumer_dead_letters_total", "records a consumer gave up on and dead-lettered", ["consumer", "topic"]
)

# Failures of a dependency, not of the record: retried for as long as they last, never dead-lettered
# (dead-lettering good records because the database is down would be data loss by another name).
# Matched by class name along the MRO so the database, broker, HTTP and Celery clients all count
# without this module importing them.
TRANSIENT_NAMES = frozenset({
    "OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError", "ConnectionError",
    "TransportError", "LLMUnavailable",
})


def transient_error(exc: BaseException) -> bool:
    """True when ``exc`` says a dependency is unavailable (retry) rather than the record is bad.

    Kafka errors say so themselves (``retriable``: a timeout or a leader change is, a message too
    large for the broker is not).
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "KafkaError" in names:
        return bool(getattr(exc, "retriable", False)) or "KafkaConnectionError" in names
    return bool(names & TRANSIENT_NAMES)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + "…"


@dataclass(kw_only=True)
class ConsumerLoop:
    """Poll, hand a batch to the handler, commit after it returned; SIGTERM stops cleanly.

    A handler that raises leaves offsets uncommitted: the loop seeks back and retries the batch
    after a backoff (``retry_backoff_s``, doubling up to ``retry_backoff_max_s``). Poison records
    never block a partition: after ``max_attempts`` failures in a row that are not a dependency
    outage (:func:`transient_error`), the batch is retried one record at a time; a record that
    fails alone goes to its dead-letter topic (:func:`shared.events.dead_letter_topic`) with the
    error, the offset moves on, and ``recsys_consumer_dead_letters_total`` counts it. A dependency
    outage is retried for as long as it lasts and never dead-letters anything.
    """

    settings: CommonSettings
    topics: list[str]
    group_id: str
    handler: BatchHandler
    name: str = "consumer"
    poll_timeout_ms: int = 500
    max_records: int = 500
    retry_backoff_s: float = 2.0
    retry_backoff_max_s: float = 30.0
    max_attempts: int = 3
    is_transient: Callable[[BaseException], bool] = transient_error
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    idle_callback: Callable[[], None] | None = None  # called after every poll (debouncers, flushers)
    # Deferred commits (debouncers): when set, handled batches are NOT committed on return; instead
    # after every poll the loop calls ``flush(force)`` which hands its buffered work on and returns the
    # offsets (next offset to read, per partition) that are now durable; the loop commits those.
    # On stop it calls ``flush(True)`` (hand everything on now) and commits. A flush that raises is
    # logged and retried at the next poll (nothing is committed meanwhile, so nothing is lost).
    flush: Callable[[bool], Mapping[TopicPartition, int]] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _failures: int = 0
    _producer: KafkaProducer | None = None
    _dlq_ready: set[str] = field(default_factory=set)

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> None:
        consumer = make_consumer(self.settings, *self.topics, group_id=self.group_id,
                                 max_poll_records=self.max_records, **self.consumer_overrides)
        log.info("consumer started", extra={"consumer": self.name, "topics": self.topics, "group": self.group_id})
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=self.poll_timeout_ms)
                records = [r for batch in polled.values() for r in batch]
                if records:
                    self._handle(consumer, records)
                if self.idle_callback is not None:
                    self.idle_callback()
                if self.flush is not None:
                    self._flush(consumer, force=False)
        finally:
            if self.flush is not None:
                self._flush(consumer, force=True)
            consumer.close(autocommit=False)
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
            log.info("consumer stopped", extra={"consumer": self.name})

    def _flush(self, consumer: KafkaConsumer, *, force: bool) -> None:
        assert self.flush is not None
        try:
            durable = self.flush(force)
        except Exception:
            log.exception("flush failed; will retry", extra={"consumer": self.name})
            return
        assigned = consumer.assignment()
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in durable.items() if tp in assigned}
        if offsets:
            try:
                consumer.commit(offsets)
            except Exception:  # e.g. a rebalance took the partitions: the new owner replays (idempotent)
                log.warning("commit after flush failed", exc_info=True, extra={"consumer": self.name})

    def _backoff(self) -> None:
        delay = min(self.retry_backoff_max_s, self.retry_backoff_s * 2 ** max(0, self._failures - 1))
        self._stop.wait(delay)

    @staticmethod
    def _rewind(consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
        """Seek every partition in ``records`` back to its first offset there (redelivered next poll)."""
        firsts: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            firsts[tp] = min(firsts.get(tp, r.offset), r.offset)
        for tp, off in firsts.items():
            consumer.seek(tp, off)

    def _handle(self, consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
        try:
            self.handler(records)
        except Exception as exc:
            first = records[0]
            transient = self.is_transient(exc)
            self._failures += 1
            RETRIES.labels(self.name, "transient" if transient else "error").inc()
            log.exception("batch failed; will retry", extra={
                "consumer": self.name, "topic": first.topic, "partition": first.partition, "offset": first.offset,
                "attempt": self._failures, "transient": transient})
            if transient or self._failures < self.max_attempts:
                self._rewind(consumer, records)
                self._backoff()
                return
            self._isolate(consumer, records)
            return
        self._failures = 0
        self._commit(consumer, records)

    def _isolate(self, consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
        """Retry a batch that keeps failing one record at a time; dead-letter the records that fail alone."""
        done: list[ConsumerRecord] = []
        for i, record in enumerate(records):
            try:
                self.handler([record])
            except Exception as exc:
                if self.is_transient(exc):  # a dependency went away meanwhile: keep the rest for later
                    self._commit(consumer, done)
                    self._rewind(consumer, records[i:])
                    self._backoff()
                    return
                try:
                    self._dead_letter(record, exc)
                except Exception:
                    log.exception("dead-lettering failed; will retry", extra={"consumer": self.name})
                    self._commit(consumer, done)
                    self._rewind(consumer, records[i:])
                    self._backoff()
                    return
            done.append(record)
        self._failures = 0
        self._commit(consumer, done)

    def _dead_letter(self, record: ConsumerRecord, exc: BaseException) -> None:
        from shared.events import DeadLetter, dead_letter_topic

        logical = {self.settings.topic(t): t for t in self.topics}.get(record.topic, record.topic)
        topic = self.settings.topic(dead_letter_topic(logical))
        raw = record.value
        text = bytes(raw).decode("utf-8", errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)
        letter = DeadLetter(source_topic=record.topic, consumer=self.group_id, partition=record.partition,
                            offset=record.offset, error=_describe(exc), raw=text[:20_000])
        if topic not in self._dlq_ready:  # a cluster may not auto-create topics
            ensure_topics(self.settings, [dead_letter_topic(logical)])
            self._dlq_ready.add(topic)
        if self._producer is None:
            self._producer = make_producer(self.settings)
        self._producer.send(topic, key=record.key, value=letter.model_dump()).get(timeout=30)
        DEAD_LETTERS.labels(self.name, record.topic).inc()
        log.error("record dead-lettered after %d failed attempts", self.max_attempts, extra={
            "consumer": self.name, "topic": record.topic, "partition": record.partition,
            "offset": record.offset, "dlq": topic, "error": letter.error})

    def _commit(self, consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
        if self.flush is not None or not records:
            return  # deferred: committed by _flush once the buffered work is durable
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            nxt = r.offset + 1
            if tp not in offsets or offsets[tp].offset < nxt:
                offsets[tp] = OffsetAndMetadata(nxt, "", -1)
        try:
            consumer.commit(offsets)
        except CommitFailedError:
            # The handler outlived max_poll_interval_ms and the group moved on: its effect is durable,
            # the records will be delivered again (to us after we rejoin, or to another member), and
            # handlers are idempotent. Never a reason to die.
            log.warning("commit failed after a slow batch; it will be redelivered", extra={
                "consumer": self.name, "records": len(records),
                "max_poll_interval_ms": self.settings.KAFKA_MAX_POLL_INTERVAL_MS})


BROKER_UP = Gauge("recsys_broker_up", "1 when the last broker probe of this process succeeded", ["service"])


class EventListener:
    """A :class:`ConsumerLoop` in a daemon thread for a service's own reactions to events (warm a
    cache, wake a refit): started from the latest offset, rebuilt every ``retry_s`` while the broker
    is down. A missed event costs the service only time, so nothing here holds a request up. Each
    attempt gives up bootstrapping after ``bootstrap_timeout_s`` (the client's default is 30 s), so a
    stop while the broker is down is not held up by it either.

    ``group_id``: one per process where every replica needs every event; a shared one where one
    replica's reaction serves all.
    """

    def __init__(self, settings: CommonSettings, *, topics: Sequence[str], group_id: str, handler: BatchHandler,
                 name: str, retry_s: float = 5.0, bootstrap_timeout_s: float = 5.0) -> None:
        self.settings, self.topics, self.group_id, self.handler = settings, list(topics), group_id, handler
        self.name, self.retry_s, self.bootstrap_timeout_s = name, retry_s, bootstrap_timeout_s
        self._stop = threading.Event()
        self._loop: ConsumerLoop | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> EventListener:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._loop = ConsumerLoop(settings=self.settings, topics=self.topics, group_id=self.group_id,
                                          handler=self.handler, name=self.name,
                                          consumer_overrides={
                                              "auto_offset_reset": "latest",
                                              "bootstrap_timeout_ms": int(self.bootstrap_timeout_s * 1000)})
                if self._stop.is_set():  # stop() ran while the loop was being built
                    return
                self._loop.run()
            except Exception as e:  # broker down: retried; the service works without these events
                log.warning("event listener failed; retrying", extra={"consumer": self.name, "error": str(e)[:300],
                                                                      "retry_s": self.retry_s})
            self._stop.wait(self.retry_s)


class BrokerWatch:
    """Probe the broker every ``every_s`` in a daemon thread; cached state for /healthz and a gauge.

    Health endpoints must answer at once (a liveness probe has a 1 s timeout), so they read this
    cached state instead of probing on every call.
    """

    def __init__(self, settings: CommonSettings, *, service: str, every_s: float = 10.0) -> None:
        self.settings = settings
        self.service = service
        self.every_s = every_s
        self.ok: bool | None = None  # None: not probed yet
        self.checked_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{service}-broker-watch", daemon=True)

    def start(self) -> BrokerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def probe(self) -> bool:
        self.ok = broker_reachable(self.settings, timeout_s=min(3.0, self.every_s))
        self.checked_at = time.time()
        BROKER_UP.labels(self.service).set(1 if self.ok else 0)
        return self.ok

    def state(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked_at": self.checked_at}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe()
            except Exception:  # never let the watcher die; the next probe tries again
                log.exception("broker probe failed", extra={"service": self.service})
            self._stop.wait(self.every_s)
