"""Database reads of the retriever: item rows to embed, the catalog, a user's history and profile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from services.retriever.candidates import HistoryEntry
from services.retriever.catalog import Catalog
from shared.models import Item, Profile, Review
from shared.text import profile_text

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
    _profiles.embedding,
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
    )
