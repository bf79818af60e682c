"""The indexer: consumes items.v1, embeds new or changed items in micro-batches, snapshots the index.

One micro-batch = one poll of the consumer. For each batch: drop events whose content hash is
already indexed (replays are no-ops), re-read the rows (the DB is the source of truth; events are
notifications), embed, apply to a copy of the index, persist the snapshot, swap; only then does
:class:`shared.kafka.ConsumerLoop` commit the offsets. A crash between snapshot and commit replays
the batch, which the hash check turns into a no-op.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Histogram

from services.retriever.candidates import TextEncoder
from services.retriever.config import RetrieverSettings, get_settings
from services.retriever.index import IndexConfig, IndexSnapshot
from services.retriever.store import SnapshotStore, index_store, item_rows, items_db_state
from services.retriever.sync import bootstrap, content_key, embed_items, load_compatible
from shared import events
from shared.db import session_scope
from shared.events import ItemEvent
from shared.kafka import ConsumerLoop, decode_value, ensure_topics
from shared.logging import get_logger
from shared.metrics import LATENCY_BUCKETS

log = get_logger(__name__)

ITEMS_EMBEDDED = Counter("recsys_retriever_items_embedded_total", "items embedded by the indexer")
EVENTS_SKIPPED = Counter(
    "recsys_retriever_events_skipped_total", "item events already indexed or invalid", ["reason"]
)
BATCH_SECONDS = Histogram(
    "recsys_retriever_index_batch_seconds", "indexer micro-batch duration", buckets=LATENCY_BUCKETS
)


class Indexer:
    """Holds the current snapshot of the indexer process and applies item events to it."""

    def __init__(
        self,
        settings: RetrieverSettings,
        *,
        encoder: TextEncoder | None = None,
        store: SnapshotStore | None = None,
    ) -> None:
        self.settings = settings
        self.config = IndexConfig.from_settings(settings)
        self.store = store or index_store(settings)
        if encoder is None:
            from shared.embeddings import get_encoder

            encoder = get_encoder(settings.EMBEDDING_MODEL, settings.DEVICE)
        self.encoder = encoder
        self._snapshot: IndexSnapshot | None = None
        self._lock = threading.Lock()

    @property
    def snapshot(self) -> IndexSnapshot:
        if self._snapshot is None:
            raise RuntimeError("indexer not bootstrapped")
        return self._snapshot

    def bootstrap(self) -> IndexSnapshot:
        self._snapshot = bootstrap(
            self.store,
            database_url=self.settings.database_url,
            encoder=self.encoder,
            config=self.config,
            batch_size=self.settings.RETRIEVER_EMBED_BATCH,
        )
        log.info(
            "indexer ready", extra={"version": self._snapshot.version_label, "items": len(self._snapshot)}
        )
        return self._snapshot

    def handle(self, records: list[ConsumerRecord]) -> None:
        """ConsumerLoop handler: raises on any failure so the batch is retried, never lost."""
        started = time.perf_counter()
        wanted: dict[str, str] = {}  # parent_asin -> content_hash announced (last one wins)
        for r in records:
            try:
                ev = ItemEvent.model_validate(decode_value(r))
            except ValueError as e:
                # A malformed notification cannot be fixed by retrying; the row, if any, is picked up
                # by the next start-up sync. Log with coordinates and move on.
                EVENTS_SKIPPED.labels("invalid").inc()
                log.error(
                    "invalid items.v1 event skipped",
                    extra={
                        "topic": r.topic,
                        "partition": r.partition,
                        "offset": r.offset,
                        "error": str(e)[:300],
                    },
                )
                continue
            wanted[ev.parent_asin] = ev.content_hash
        self.apply(wanted)
        BATCH_SECONDS.observe(time.perf_counter() - started)

    def apply(self, wanted: dict[str, str]) -> IndexSnapshot:
        """Embed and index the announced items whose content differs from the snapshot."""
        with self._lock:
            snap = self.snapshot
            if self.store.latest_version() > snap.version:
                # another process (an HTTP replica catching up at start) wrote a newer snapshot:
                # build on it so the served index never loses what that one added
                newer = load_compatible(self.store, config=self.config, encoder=self.encoder)
                if newer is not None:
                    snap = self._snapshot = newer
            todo = [a for a, h in wanted.items() if not h or snap.hashes.get(a) != h]
            EVENTS_SKIPPED.labels("already_indexed").inc(len(wanted) - len(todo))
            if not todo:
                return snap
            with session_scope(self.settings.database_url) as s:
                rows = item_rows(s, todo)
            found = {r.parent_asin for r in rows}
            missing = [a for a in todo if a not in found]
            if missing:  # ingest writes the row before the event (outbox): a missing row was deleted
                log.warning(
                    "items announced but not in the database; removing",
                    extra={"count": len(missing), "first": missing[0]},
                )
            rows = [r for r in rows if snap.hashes.get(r.parent_asin) != content_key(r)]
            updates = embed_items(rows, self.encoder, batch_size=self.settings.RETRIEVER_EMBED_BATCH)
            if not updates and not any(a in snap for a in missing):
                return snap
            new = snap.with_updates(
                updates, removals=missing, config=self.config, db_state={"event_driven": True}
            )  # forces a diff check on next start
            new = self.store.save(new)
            self._snapshot = new
            ITEMS_EMBEDDED.inc(len(updates))
            log.info(
                "index updated",
                extra={
                    "version": new.version_label,
                    "embedded": len(updates),
                    "removed": len(missing),
                    "items": len(new),
                },
            )
            return new

    def db_state(self) -> dict[str, Any]:
        with session_scope(self.settings.database_url) as s:
            return items_db_state(s)


def build_loop(settings: RetrieverSettings, indexer: Indexer) -> ConsumerLoop:
    return ConsumerLoop(
        settings=settings,
        topics=[events.ITEMS],
        group_id=settings.RETRIEVER_INDEXER_GROUP,
        handler=indexer.handle,
        name="retriever-indexer",
        max_records=settings.RETRIEVER_INDEXER_MAX_RECORDS,
    )


def run(*, settings: RetrieverSettings | None = None) -> int:
    """``recsys consume retriever-indexer``: bootstrap from the DB, then follow items.v1 until SIGTERM."""
    s = settings or get_settings()
    s.ensure_home()
    ensure_topics(s, [events.ITEMS])
    indexer = Indexer(s)
    loop = build_loop(s, indexer)
    loop.install_signal_handlers()
    indexer.bootstrap()
    loop.run()
    return 0
