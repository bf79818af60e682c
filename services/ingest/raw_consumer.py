"""Streaming ingestion: consume ``reviews.raw.v1`` / ``items.raw.v1`` through the same validation and
storage path as the HTTP API.

A record that fails (bad bytes, bad JSON, bad fields) goes to ``reviews.dlq.v1`` / ``items.dlq.v1``
as a :class:`shared.events.DeadLetter` with the reason and its source offset; it is never dropped
silently. Offsets are committed by :class:`shared.kafka.ConsumerLoop` only after this handler returned,
i.e. after the valid rows (and their outbox events) are committed and the dead letters are acked.
"""

from __future__ import annotations

from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter

from services.ingest import store
from services.ingest.config import IngestSettings, get_settings
from services.ingest.schemas import Kind, Rejection
from services.ingest.service import validate
from shared.db import session_scope
from shared.events import ITEMS_DLQ, ITEMS_RAW, REVIEWS_DLQ, REVIEWS_RAW, DeadLetter
from shared.kafka import ConsumerLoop, ensure_topics, make_producer
from shared.logging import get_logger

log = get_logger(__name__)

RAW_RECORDS = Counter("recsys_ingest_raw_records_total", "raw-topic records handled", ["kind", "outcome"])
SOURCES: dict[str, tuple[Kind, str]] = {
    REVIEWS_RAW: ("reviews", REVIEWS_DLQ),
    ITEMS_RAW: ("items", ITEMS_DLQ),
}


def _raw_text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value)[:limit]


class RawHandler:
    """Batch handler for :class:`ConsumerLoop`: store the valid records, dead-letter the rest."""

    def __init__(self, *, settings: IngestSettings, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self._producer = producer
        self._logical = {settings.topic(t): t for t in SOURCES}

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        return self._producer

    def _dead_letter(self, record: ConsumerRecord, *, error: str, errors: list[dict[str, Any]]) -> DeadLetter:
        return DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error,
            errors=errors,
            raw=_raw_text(record.value, self.settings.DLQ_MAX_RAW_CHARS),
        )

    def __call__(self, records: list[ConsumerRecord]) -> None:
        dead: list[tuple[str, ConsumerRecord, DeadLetter]] = []
        by_kind: dict[Kind, list[tuple[ConsumerRecord, Any]]] = {"reviews": [], "items": []}
        for record in records:
            kind, dlq = SOURCES[self._logical.get(record.topic, record.topic)]
            try:
                if record.value is None:
                    raise ValueError("record has no value")
                by_kind[kind].append((record, orjson.loads(record.value)))
            except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                dead.append(
                    (dlq, record, self._dead_letter(record, error=f"not valid JSON: {exc}", errors=[]))
                )
        stored = 0
        with session_scope(self.settings.database_url) as session:
            for kind, items in by_kind.items():
                if not items:
                    continue
                valid, rejected = validate(kind=kind, records=[doc for _, doc in items])
                for rej in rejected:
                    record = items[rej.index][0]
                    dead.append(
                        (
                            SOURCES[self._logical.get(record.topic, record.topic)][1],
                            record,
                            self._dead_letter(record, error=_reason(rej), errors=rej.errors),
                        )
                    )
                store.upsert(session=session, kind=kind, models=valid)
                stored += len(valid)
                RAW_RECORDS.labels(kind, "stored").inc(len(valid))
        # Rows are committed; now the dead letters must be acked before the offsets may be committed.
        if dead:
            futures = [
                self.producer.send(self.settings.topic(dlq), key=record.key, value=letter.model_dump())
                for dlq, record, letter in dead
            ]
            self.producer.flush(timeout=30)
            for fut in futures:
                fut.get(timeout=0)
            for dlq, record, letter in dead:
                RAW_RECORDS.labels(
                    SOURCES[self._logical.get(record.topic, record.topic)][0], "dead_lettered"
                ).inc()
                log.warning(
                    "record dead-lettered",
                    extra={
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "dlq": dlq,
                        "error": letter.error,
                    },
                )
        log.info(
            "raw batch handled", extra={"records": len(records), "stored": stored, "dead_lettered": len(dead)}
        )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


def _reason(rejection: Rejection) -> str:
    return f"validation failed: {rejection.summary()}"


def make_loop(settings: IngestSettings, *, group_id: str | None = None) -> tuple[ConsumerLoop, RawHandler]:
    handler = RawHandler(settings=settings)
    loop = ConsumerLoop(
        settings=settings,
        topics=[REVIEWS_RAW, ITEMS_RAW],
        group_id=group_id or settings.RAW_GROUP_ID,
        handler=handler,
        name="ingest-raw",
    )
    return loop, handler


def run(*, settings: IngestSettings | None = None) -> int:
    """``recsys consume ingest-raw``: run until SIGTERM. Also relays the outbox (safe beside other relays)."""
    ingest_settings = settings or get_settings()
    ingest_settings.ensure_home()
    ensure_topics(ingest_settings, [REVIEWS_RAW, ITEMS_RAW, REVIEWS_DLQ, ITEMS_DLQ])
    loop, handler = make_loop(ingest_settings)
    loop.install_signal_handlers()
    relay = (
        ingest_settings.outbox_relay(name="raw-relay").start()
        if ingest_settings.RELAY_ENABLED
        else None
    )
    try:
        loop.run()
    finally:
        if relay is not None:
            relay.stop()
        handler.close()
    return 0
