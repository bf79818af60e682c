"""The one Kafka client factory (kafka-python) and a consumer loop with at-least-once semantics.

Settings work against the dev broker (tansu) and a real Apache Kafka alike. Consumers commit
offsets only after the handler returned, i.e. after its effect is durable; handlers must be
idempotent (upserts), so a replay after a crash changes nothing.
"""
from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, TopicAlreadyExistsError
from kafka.serializer import Serializer
from kafka.structs import OffsetAndMetadata, TopicPartition

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


@dataclass(kw_only=True)
class ConsumerLoop:
    """Poll, hand a batch to the handler, commit after it returned; SIGTERM stops cleanly.

    A handler that raises leaves offsets uncommitted: the loop seeks back and retries the batch
    after ``retry_backoff_s`` (at-least-once; handlers are idempotent).
    """

    settings: CommonSettings
    topics: list[str]
    group_id: str
    handler: BatchHandler
    name: str = "consumer"
    poll_timeout_ms: int = 500
    max_records: int = 500
    retry_backoff_s: float = 2.0
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    idle_callback: Callable[[], None] | None = None  # called after every poll (debouncers, flushers)
    # Deferred commits (debouncers): when set, handled batches are NOT committed on return; instead
    # after every poll the loop calls ``flush(force)`` which hands its buffered work on and returns the
    # offsets (next offset to read, per partition) that are now durable; the loop commits those.
    # On stop it calls ``flush(True)`` (hand everything on now) and commits. A flush that raises is
    # logged and retried at the next poll (nothing is committed meanwhile, so nothing is lost).
    flush: Callable[[bool], Mapping[TopicPartition, int]] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

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

    def _handle(self, consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
        try:
            self.handler(records)
        except Exception:
            first = records[0]
            log.exception("batch failed; will retry", extra={
                "consumer": self.name, "topic": first.topic, "partition": first.partition, "offset": first.offset})
            # Rewind every partition of the batch to its first offset and retry later.
            firsts: dict[TopicPartition, int] = {}
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                firsts[tp] = min(firsts.get(tp, r.offset), r.offset)
            for tp, off in firsts.items():
                consumer.seek(tp, off)
            self._stop.wait(self.retry_backoff_s)
            return
        if self.flush is not None:
            return  # committed by _flush once the buffered work is durable
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
