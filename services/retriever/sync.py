"""Embedding items and keeping a snapshot in step with the items table.

Used by the indexer (per micro-batch of items.v1 events) and on start by both the indexer and the
HTTP process: load the newest snapshot; if its recorded DB state differs from the table, embed only
the items whose content hash changed (a restart re-embeds nothing that was already indexed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from services.retriever.candidates import TextEncoder
from services.retriever.index import IndexConfig, IndexSnapshot, ItemVector
from services.retriever.store import SnapshotStore, item_hashes, item_rows, items_db_state
from shared.amazon import item_text
from shared.db import session_scope
from shared.logging import get_logger

log = get_logger(__name__)

SYNC_CHUNK = 2_000


def content_key(item: Any) -> str:
    """What identifies the embedded content: the row's content_hash, else a hash of its text."""
    stored = getattr(item, "content_hash", "") or ""
    return stored or "t:" + hashlib.sha1(item_text(item).encode()).hexdigest()


def embed_items(items: Sequence[Any], encoder: TextEncoder, *, batch_size: int = 64) -> list[ItemVector]:
    """Embed item text (title+features+description+details+category) and title, normalized."""
    if not items:
        return []
    texts = [item_text(it) or str(it.parent_asin) for it in items]
    titles = [(getattr(it, "title", "") or "").strip() or text for it, text in zip(items, texts, strict=True)]
    kwargs = {"batch_size": batch_size} if _accepts_batch_size(encoder) else {}
    vecs = encoder.encode(texts, **kwargs)
    tvecs = encoder.encode(titles, **kwargs)
    return [ItemVector(str(it.parent_asin), content_key(it), vecs[i], tvecs[i]) for i, it in enumerate(items)]


def _accepts_batch_size(encoder: TextEncoder) -> bool:
    import inspect

    try:
        return "batch_size" in inspect.signature(encoder.encode).parameters
    except (TypeError, ValueError):
        return False


def encoder_name(encoder: TextEncoder) -> str:
    return str(getattr(encoder, "model_name", type(encoder).__name__))


def load_compatible(
    store: SnapshotStore, *, config: IndexConfig, encoder: TextEncoder
) -> IndexSnapshot | None:
    """The newest snapshot if it was built with this encoder, else None (a rebuild follows)."""
    snap = store.load(config=config)
    if snap is None:
        return None
    if snap.model_name != encoder_name(encoder) or snap.dim != encoder.dim:
        log.warning(
            "snapshot built with another model; rebuilding",
            extra={"snapshot_model": snap.model_name, "model": encoder_name(encoder)},
        )
        return None
    return snap


def sync_with_db(
    snap: IndexSnapshot | None,
    *,
    database_url: str,
    encoder: TextEncoder,
    config: IndexConfig,
    batch_size: int = 64,
) -> IndexSnapshot:
    """A snapshot reflecting every item in the DB; ``snap`` itself when it already matched."""
    with session_scope(database_url) as s:
        state = items_db_state(s)  # read first: the snapshot may under-claim, never over-claim
        if snap is not None and snap.db_state == state and snap.kind == config.kind:
            return snap
        hashes = item_hashes(s)
    if snap is None:
        snap = IndexSnapshot.empty(dim=encoder.dim, model_name=encoder_name(encoder), config=config)
    stale = [a for a, h in hashes.items() if not h or snap.hashes.get(a) != h]
    removed = [a for a in snap.hashes if a not in hashes]
    started = time.perf_counter()
    log.info(
        "syncing index with database",
        extra={"items": len(hashes), "to_embed": len(stale), "to_remove": len(removed)},
    )
    updates: list[ItemVector] = []
    for i in range(0, len(stale), SYNC_CHUNK):
        with session_scope(database_url) as s:
            rows = item_rows(s, stale[i : i + SYNC_CHUNK])
        # rows without a stored hash are compared on their text hash
        rows = [r for r in rows if snap.hashes.get(r.parent_asin) != content_key(r)]
        updates.extend(embed_items(rows, encoder, batch_size=batch_size))
        if len(stale) > SYNC_CHUNK:
            log.info(
                "embedding progress", extra={"done": min(i + SYNC_CHUNK, len(stale)), "total": len(stale)}
            )
    new = snap.with_updates(updates, removals=removed, config=config, db_state=state)
    log.info(
        "index synced",
        extra={
            "items": len(new),
            "embedded": len(updates),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return new


def bootstrap(
    store: SnapshotStore,
    *,
    database_url: str,
    encoder: TextEncoder,
    config: IndexConfig,
    batch_size: int = 64,
) -> IndexSnapshot:
    """Load the newest compatible snapshot, catch it up with the DB and persist it if it changed.

    Holds the store's bootstrap lock so that an indexer and an HTTP process starting together
    embed the catalog once, not twice.
    """
    with store.bootstrap_lock():
        snap = load_compatible(store, config=config, encoder=encoder)
        synced = sync_with_db(
            snap, database_url=database_url, encoder=encoder, config=config, batch_size=batch_size
        )
        if synced is snap and snap is not None:
            return snap
        return store.save(synced)
