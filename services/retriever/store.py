"""The retriever's storage: database reads and index snapshots on disk.

* Database reads: item rows to embed, the catalog with its statistics, a user's history and profile.
* :class:`SnapshotStore` writes an :class:`IndexSnapshot` into a temporary directory, renames it into
  place (atomic on POSIX) and then replaces ``manifest.json``; readers only follow the manifest, so
  they never see a half-written snapshot. Versions increase monotonically under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import faiss
import numpy as np
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from services.retriever.candidates import HistoryEntry
from services.retriever.catalog import Catalog
from services.retriever.config import RetrieverSettings
from services.retriever.index import (
    IndexConfig,
    IndexSnapshot,
    SnapshotError,
    index_kind,
    new_faiss_index,
    tune_index,
)
from services.retriever.sources.lexical import REVIEW_CHARS
from shared.logging import get_logger
from shared.models import Item, Profile, Review
from shared.text import profile_text

log = get_logger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# Rows committed by a slow transaction can carry an updated_at older than one we already saw;
# incremental reads look back this far and a periodic full reload catches anything older.
CATALOG_OVERLAP = timedelta(seconds=30)
IN_CHUNK = 1000


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def items_db_state(session: Session) -> dict[str, Any]:
    """Cheap fingerprint of the items table: row count and newest updated_at."""
    count, newest = session.execute(select(func.count(Item.parent_asin), func.max(Item.updated_at))).one()
    return {"items": int(count or 0), "max_updated_at": _iso(newest)}


def item_hashes(session: Session) -> dict[str, str]:
    return dict(session.execute(select(Item.parent_asin, Item.content_hash)).all())


def item_rows(session: Session, asins: Sequence[str]) -> list[Item]:
    rows: list[Item] = []
    for i in range(0, len(asins), IN_CHUNK):
        chunk = list(asins[i : i + IN_CHUNK])
        rows.extend(session.scalars(select(Item).where(Item.parent_asin.in_(chunk))).all())
    for r in rows:
        session.expunge(r)
    return rows


_CATALOG_COLUMNS = (
    Item.parent_asin,
    Item.title,
    Item.main_category,
    Item.features,
    Item.average_rating,
    Item.rating_number,
)


@dataclass(frozen=True, slots=True)
class CatalogCursor:
    items_ts: datetime | None
    reviews_ts: datetime | None


def _aggregates(session: Session, asins: Sequence[str] | None = None) -> dict[str, tuple[float, int]]:
    q = select(Review.parent_asin, func.sum(Review.rating), func.count()).group_by(Review.parent_asin)
    if asins is None:
        return {a: (float(s), int(n)) for a, s, n in session.execute(q)}
    out: dict[str, tuple[float, int]] = {}
    for i in range(0, len(asins), IN_CHUNK):
        chunk = list(asins[i : i + IN_CHUNK])
        out.update(
            {a: (float(s), int(n)) for a, s, n in session.execute(q.where(Review.parent_asin.in_(chunk)))}
        )
    return out


def load_catalog(session: Session, *, prior_count: float) -> tuple[Catalog, CatalogCursor]:
    """The whole catalog with rating statistics (metadata, else derived from reviews)."""
    cursor = CatalogCursor(
        session.execute(select(func.max(Item.updated_at))).scalar(),
        session.execute(select(func.max(Review.updated_at))).scalar(),
    )
    items = [dict(r) for r in session.execute(select(*_CATALOG_COLUMNS)).mappings()]
    return Catalog.from_aggregates(items, _aggregates(session), prior_count=prior_count), cursor


def refresh_catalog(
    session: Session, catalog: Catalog, cursor: CatalogCursor
) -> tuple[Catalog, CatalogCursor]:
    """Apply items and review statistics changed since ``cursor`` (returns the same catalog if none)."""
    items_ts = session.execute(select(func.max(Item.updated_at))).scalar()
    reviews_ts = session.execute(select(func.max(Review.updated_at))).scalar()
    if items_ts == cursor.items_ts and reviews_ts == cursor.reviews_ts:
        return catalog, cursor
    changed_items: list[dict[str, Any]] = []
    if items_ts is not None and items_ts != cursor.items_ts:
        q = select(*_CATALOG_COLUMNS)
        if cursor.items_ts is not None:
            q = q.where(Item.updated_at >= cursor.items_ts - CATALOG_OVERLAP)
        changed_items = [dict(r) for r in session.execute(q).mappings()]
    aggregates: dict[str, tuple[float, int]] = {}
    if reviews_ts is not None and reviews_ts != cursor.reviews_ts:
        q2 = select(Review.parent_asin).distinct()
        if cursor.reviews_ts is not None:
            q2 = q2.where(Review.updated_at >= cursor.reviews_ts - CATALOG_OVERLAP)
        asins = list(session.scalars(q2).all())
        aggregates = _aggregates(session, asins)
    return (catalog.updated(items=changed_items, aggregates=aggregates), CatalogCursor(items_ts, reviews_ts))


@dataclass(frozen=True, slots=True)
class StoredProfile:
    user_id: str
    version: int
    status: str
    summary: str
    text: str  # summary plus the structured fields, what gets embedded when there is no vector
    embedding: bytes | None
    dislikes: tuple[str, ...] = ()  # a negative signal (hybrid pushes similar items down), never embedded
    dislike_embedding: bytes | None = None  # the dislikes embedded on their own by the profiler


def stored_profile_text(row: Any) -> str:
    """The embedded text of a stored profile (``row``: a Profile or a row with those columns)."""
    return profile_text(
        summary=row.summary,
        preferred_products=row.preferred_products or (),
        liked_features=row.liked_features or (),
        potential_interests=row.potential_interests or (),
    )


_profiles, _reviews = Profile.__table__.c, Review.__table__.c
# Built once: per-request statement construction and cache-key generation cost more than the reads.
_HISTORY_READ = (
    select(_reviews.parent_asin, _reviews.rating, _reviews.timestamp)
    .where(_reviews.user_id == bindparam("user_id"))
    .order_by(_reviews.timestamp.desc())
    .limit(bindparam("limit"))
)
_PROFILE_READ = select(
    _profiles.version,
    _profiles.status,
    _profiles.summary,
    _profiles.preferred_products,
    _profiles.liked_features,
    _profiles.potential_interests,
    _profiles.dislikes,
    _profiles.embedding,
    _profiles.dislike_embedding,
).where(_profiles.user_id == bindparam("user_id"))


def load_history(conn: Connection | Session, user_id: str, *, history_max: int) -> tuple[HistoryEntry, ...]:
    """The user's most recent reviews, newest first."""
    rows = conn.execute(_HISTORY_READ, {"user_id": user_id, "limit": max(1, history_max)}).all()
    return tuple(HistoryEntry(a, float(r), int(t)) for a, r, t in rows)


def load_profile(conn: Connection | Session, user_id: str) -> StoredProfile | None:
    """The user's stored profile (None when there is none or it failed)."""
    prof = conn.execute(_PROFILE_READ, {"user_id": user_id}).first()
    if prof is None or prof.status == "failed":
        return None
    return StoredProfile(
        user_id=user_id,
        version=int(prof.version or 0),
        status=prof.status,
        summary=prof.summary or "",
        text=stored_profile_text(prof),
        embedding=prof.embedding,
        dislikes=tuple(str(d) for d in (prof.dislikes or ()) if str(d).strip()),
        dislike_embedding=prof.dislike_embedding,
    )


# ---- index snapshots on disk ----------------------------------------------------------------------
def index_store(settings: RetrieverSettings) -> SnapshotStore:
    """The snapshot store of this deployment (``HOME/index``), shared by the indexer and HTTP processes."""
    return SnapshotStore(settings.HOME / "index", keep=settings.RETRIEVER_SNAPSHOTS_KEPT)


class SnapshotStore:
    """Versioned snapshot directories under ``root`` plus a manifest naming the current one."""

    def __init__(self, root: Path, *, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep

    @contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / name, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """Serializes writers of versions and the manifest (across processes)."""
        return self._flock(".lock")

    def bootstrap_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a process catches a snapshot up with the DB (long: may embed the catalog)."""
        return self._flock(".bootstrap.lock")

    def manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:  # cannot happen with os.replace; say so loudly if it does
            raise SnapshotError(f"corrupt index manifest {path}: {e}") from e

    def latest_version(self) -> int:
        m = self.manifest()
        return int(m["version"]) if m else 0

    def save(self, snap: IndexSnapshot) -> IndexSnapshot:
        """Persist ``snap`` as the next version and point the manifest at it; returns it versioned."""
        with self._locked():
            existing = [int(p.name[1:]) for p in self.root.glob("v*") if p.name[1:].isdigit()]
            version = max([self.latest_version(), *existing, 0]) + 1
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            try:
                if snap.kind != "flat":  # flat is rebuilt from vectors.npy on load
                    faiss.write_index(snap.index, str(tmp / "index.faiss"))
                np.save(tmp / "vectors.npy", snap.vectors)
                np.save(tmp / "title_vectors.npy", snap.title_vectors)
                meta = {
                    "format": FORMAT_VERSION,
                    "version": version,
                    "model_name": snap.model_name,
                    "dim": snap.dim,
                    "kind": snap.kind,
                    "fingerprint": f"{snap.fingerprint:016x}",
                    "db_state": snap.db_state,
                    "dead_in_index": snap.dead_in_index,
                    "n_items": len(snap),
                    "created_at": time.time(),
                    "slot_asin": list(snap.slot_asin),
                    "hashes": snap.hashes,
                }
                (tmp / "meta.json").write_text(json.dumps(meta, separators=(",", ":")))
                for p in tmp.iterdir():
                    _fsync(p)
                final = self.root / f"v{version:010d}"
                os.rename(tmp, final)
                _fsync_dir(self.root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            manifest = {
                k: meta[k]
                for k in (
                    "format",
                    "version",
                    "model_name",
                    "dim",
                    "kind",
                    "fingerprint",
                    "db_state",
                    "n_items",
                    "created_at",
                )
            } | {"dir": final.name}
            mtmp = self.root / f".manifest-{uuid.uuid4().hex}"
            mtmp.write_text(json.dumps(manifest))
            _fsync(mtmp)
            os.replace(mtmp, self.root / MANIFEST)
            _fsync_dir(self.root)
            self._prune(version)
        log.info("index snapshot saved", extra={"version": version, "items": len(snap), "kind": snap.kind})
        return snap.with_version(version)

    def load(self, *, config: IndexConfig) -> IndexSnapshot | None:
        """The snapshot the manifest names, or None when there is none yet."""
        for attempt in range(3):
            m = self.manifest()
            if m is None:
                return None
            try:
                return self._load_dir(self.root / m["dir"], config)
            except FileNotFoundError:  # pruned by a fast writer between manifest and files: re-read
                if attempt == 2:
                    raise
        return None

    def _load_dir(self, path: Path, config: IndexConfig) -> IndexSnapshot:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise SnapshotError(f"snapshot {path} has format {meta.get('format')}, expected {FORMAT_VERSION}")
        slot_asin = tuple(meta["slot_asin"])
        vectors = np.load(path / "vectors.npy")
        title_vectors = np.load(path / "title_vectors.npy")
        if meta["kind"] == "flat":
            # flat storage is the vectors themselves: rebuilt in a memcpy instead of stored twice
            live = np.asarray([s for s, a in enumerate(slot_asin) if a is not None], dtype=np.int64)
            index = new_faiss_index(IndexConfig(kind="flat"), int(meta["dim"]), vectors[:0])
            if len(live):
                index.add_with_ids(np.ascontiguousarray(vectors[live]), live)
        else:
            index = faiss.read_index(str(path / "index.faiss"))
        tune_index(index, config)
        return IndexSnapshot(
            index=index,
            slot_asin=slot_asin,
            vectors=vectors,
            title_vectors=title_vectors,
            hashes=dict(meta["hashes"]),
            asin_slot={a: s for s, a in enumerate(slot_asin) if a is not None},
            model_name=meta["model_name"],
            dim=int(meta["dim"]),
            kind=index_kind(index),
            fingerprint=int(meta["fingerprint"], 16),
            version=int(meta["version"]),
            dead_in_index=int(meta.get("dead_in_index", 0)),
            db_state=dict(meta.get("db_state") or {}),
            created_at=float(meta["created_at"]),
        )

    def _prune(self, current: int) -> None:
        dirs = sorted(
            (p for p in self.root.glob("v*") if p.name[1:].isdigit()), key=lambda p: int(p.name[1:])
        )
        for p in dirs[: -self.keep]:
            if int(p.name[1:]) != current:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".tmp-*"):  # leftovers of a crash mid-write
            if time.time() - p.stat().st_mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some filesystems refuse fsync on directories; rename is still atomic
        pass


# ---- the ranking core's training data -----------------------------------------------------------------
class ReviewRow(NamedTuple):
    """One review as the candidate sources read it (``title`` / ``text`` clipped: the ``reviews``
    source's documents)."""

    user_id: str
    parent_asin: str
    rating: float
    timestamp: int
    title: str = ""
    text: str = ""


_TEXT_COLUMNS = (Item.parent_asin, Item.title, Item.main_category, Item.store, Item.features,
                 Item.description, Item.details)


def training_data_version(session: Session) -> str:
    """Changes whenever a review or an item is added or changed (the ranker refits then)."""
    n, top, changed = session.execute(select(func.count(Review.id), func.max(Review.id),
                                             func.max(Review.updated_at))).one()
    items, items_changed = session.execute(select(func.count(Item.parent_asin), func.max(Item.updated_at))).one()
    return f"r{n or 0}.{top or 0}.{changed}.i{items or 0}.{items_changed}"


def training_data(session: Session) -> tuple[list[ReviewRow], list[SimpleNamespace]]:
    """Every review (user, item, rating, time, its title and text clipped to what the ``reviews``
    source reads of one review) and every item's text fields, for the ranking core."""
    reviews = [ReviewRow(str(u), str(a), float(r), int(t), title or "", text or "")
               for u, a, r, t, title, text in session.execute(
                   select(Review.user_id, Review.parent_asin, Review.rating, Review.timestamp,
                          func.substr(Review.title, 1, REVIEW_CHARS), func.substr(Review.text, 1, REVIEW_CHARS)))]
    items = [SimpleNamespace(**dict(m)) for m in session.execute(select(*_TEXT_COLUMNS)).mappings()]
    return reviews, items
