"""Everything the ALS service keeps in the database: versions, factors, top-N, lease, small state.

Bulk writes use PostgreSQL COPY (and plain executemany elsewhere) because a full run writes one
row per (user, rank): tens of millions of rows on All_Beauty-sized data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.als.model import FittedModel
from shared.als_topn import user_topn
from shared.db import get_engine, session_scope
from shared.logging import get_logger
from shared.models import AlsFactor, AlsItemIndex, AlsLock, AlsModel, AlsState, AlsTopN, ItemNeighbours, Review

log = get_logger(__name__)

TRAINING_LOCK = "als-training"


def _now() -> datetime:
    return datetime.now(UTC)


# --- lease: one training at a time, across processes ---------------------------------------------
def acquire_lease(url: str, *, name: str = TRAINING_LOCK, owner: str, ttl_s: float) -> bool:
    """Take the lease if it is free, expired, or already ours (re-entrant); False when someone holds it."""
    now = _now()
    expires = now + timedelta(seconds=ttl_s)
    with session_scope(url) as s:
        result: Any = s.execute(
            update(AlsLock)
            .where(AlsLock.name == name, (AlsLock.owner == owner) | (AlsLock.expires_at < now))
            .values(owner=owner, acquired_at=now, expires_at=expires)
        )
        taken = result.rowcount
        if taken:
            return True
    try:
        with session_scope(url) as s:
            s.execute(insert(AlsLock).values(name=name, owner=owner, acquired_at=now, expires_at=expires))
        return True
    except IntegrityError:
        return False  # someone else holds a live lease


def renew_lease(url: str, *, name: str = TRAINING_LOCK, owner: str, ttl_s: float) -> bool:
    with session_scope(url) as s:
        result: Any = s.execute(
            update(AlsLock)
            .where(AlsLock.name == name, AlsLock.owner == owner)
            .values(expires_at=_now() + timedelta(seconds=ttl_s))
        )
        return bool(result.rowcount)


def release_lease(url: str, *, name: str = TRAINING_LOCK, owner: str) -> None:
    with session_scope(url) as s:
        s.execute(delete(AlsLock).where(AlsLock.name == name, AlsLock.owner == owner))


def lease_holder(url: str, *, name: str = TRAINING_LOCK) -> str | None:
    """The owner of a live (unexpired) lease, or None."""
    with session_scope(url) as s:
        row = s.get(AlsLock, name)
        if row is None or _aware(row.expires_at) < _now():
            return None
        return row.owner


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite drops the zone


# --- small durable state ---------------------------------------------------------------------------
def get_state(session: Session, key: str, *, for_update: bool = False) -> dict[str, Any]:
    stmt = select(AlsState).where(AlsState.key == key)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).scalar_one_or_none()
    return dict(row.value) if row else {}


def put_state(session: Session, key: str, value: dict[str, Any]) -> None:
    row = session.get(AlsState, key)
    if row is None:
        session.add(AlsState(key=key, value=value))
    else:
        row.value = value
        row.updated_at = _now()
    session.flush()


def newest_review_id(session: Session) -> int:
    """The highest review row id (0 when there are none): the retrain trigger's watermark."""
    return int(session.scalar(select(func.max(Review.id))) or 0)


def count_reviews_after(session: Session, review_id: int) -> int:
    """Reviews stored after the row with id ``review_id`` (each review is one row: counted by identity)."""
    return int(session.scalar(select(func.count()).select_from(Review).where(Review.id > review_id)) or 0)


def read_state(url: str, key: str) -> dict[str, Any]:
    with session_scope(url) as s:
        return get_state(s, key)


def write_state(url: str, key: str, value: dict[str, Any]) -> None:
    with session_scope(url) as s:
        put_state(s, key, value)


# --- model versions -----------------------------------------------------------------------------------
def create_version(url: str, *, kind: str, params: dict[str, Any], run_id: str | None) -> int:
    with session_scope(url) as s:
        row = AlsModel(
            kind=kind, status="training", params=params, metrics={}, run_id=run_id, started_at=_now()
        )
        s.add(row)
        s.flush()
        return int(row.version)


def mark_failed(url: str, *, version: int, error: str) -> None:
    with session_scope(url) as s:
        s.execute(
            update(AlsModel)
            .where(AlsModel.version == version)
            .values(status="failed", error=error[:4000], trained_at=_now())
        )


def live_model(session: Session, *, kind: str, for_update: bool = False) -> AlsModel | None:
    stmt = select(AlsModel).where(AlsModel.kind == kind, AlsModel.status == "live")
    if for_update:
        stmt = stmt.with_for_update()
    return session.execute(stmt.order_by(AlsModel.version.desc()).limit(1)).scalar_one_or_none()


def get_live(url: str, *, kind: str) -> AlsModel | None:
    with session_scope(url) as s:
        return live_model(s, kind=kind)


def recent_versions(url: str, *, limit: int = 20, kind: str | None = None) -> list[AlsModel]:
    with session_scope(url) as s:
        stmt = select(AlsModel).order_by(AlsModel.version.desc()).limit(limit)
        if kind:
            stmt = stmt.where(AlsModel.kind == kind)
        return list(s.execute(stmt).scalars())


def get_version(url: str, version: int) -> AlsModel | None:
    with session_scope(url) as s:
        return s.get(AlsModel, version)


def user_recommendations(url: str, *, version: int, user_id: str, k: int) -> list[tuple[str, float]]:
    """One user's stored top-k (the serving read lives in :mod:`shared.als_topn`, shared with the
    retriever, which blends it into hybrid candidates)."""
    return user_topn(url, version=version, user_id=user_id, k=k)


def count_recommendations(url: str, *, version: int) -> int:
    """Users with a stored top-N list for this version."""
    with session_scope(url) as s:
        return int(
            s.execute(
                select(func.count()).select_from(AlsTopN).where(AlsTopN.model_version == version)
            ).scalar_one()
        )


# --- bulk writes ---------------------------------------------------------------------------------------
def write_factors(url: str, *, version: int, model: FittedModel) -> int:
    """User and item factors + biases of a version (float32 little-endian bytes)."""

    def rows() -> Iterator[tuple[Any, ...]]:
        for entity, ids, bias, vecs in (
            ("user", model.user_ids, model.user_bias, model.user_factors),
            ("item", model.item_ids, model.item_bias, model.item_factors),
        ):
            vecs = np.ascontiguousarray(vecs, dtype="<f4")
            for j, entity_id in enumerate(ids):
                yield version, entity, str(entity_id), float(bias[j]), vecs[j].tobytes()

    return bulk_insert(
        url, AlsFactor.__tablename__, ["model_version", "entity", "entity_id", "bias", "vector"], rows()
    )


def write_top_n(url: str, *, version: int, model: FittedModel, n: int) -> int:
    """The top-n unseen items of every user of the model (best first): one row per user, written in
    one transaction with the version's item index. Returns the number of users written."""
    user_ids = model.user_ids.to_numpy().astype(str)

    def rows() -> Iterator[tuple[Any, ...]]:
        for users, idx, vals in model.top_n(n):
            valid = idx >= 0
            for u, i, v, ok in zip(users, idx, vals, valid, strict=True):
                yield version, user_ids[u], i[ok].astype("<i4").tobytes(), v[ok].astype("<f4").tobytes()

    index = "\n".join(model.item_ids.astype(str)).encode()
    return bulk_insert(
        url,
        AlsTopN.__tablename__,
        ["model_version", "user_id", "items", "scores"],
        rows(),
        before=[(AlsItemIndex.__tablename__, ["model_version", "item_ids"], [(version, index)])],
    )


def write_neighbours(url: str, *, version: int, lists: dict[str, dict[str, list[tuple[str, float]]]]) -> int:
    """Every item's neighbour lists of a version (``shared.neighbours``), one row per (kind, item):
    ``[[asin, score], ...]`` as JSON (floats written with repr, so they read back exactly). Written
    while the version is ``training``; the status flip makes them live. Returns the rows written."""

    def rows() -> Iterator[tuple[Any, ...]]:
        for kind, by_item in lists.items():
            for asin, pairs in by_item.items():
                yield version, kind, asin, json.dumps([[a, float(s)] for a, s in pairs])

    return bulk_insert(
        url, ItemNeighbours.__tablename__, ["model_version", "kind", "parent_asin", "neighbours"], rows()
    )


def copy_neighbours(url: str, *, from_version: int, to_version: int) -> int:
    """Copy a version's neighbour rows to another version (same reviews, same settings: no recount);
    returns the rows copied."""
    table = ItemNeighbours.__table__
    cols = [table.c.kind, table.c.parent_asin, table.c.neighbours]
    with session_scope(url) as s:
        s.execute(
            insert(ItemNeighbours).from_select(
                ["model_version", "kind", "parent_asin", "neighbours"],
                select(literal(to_version), *cols).where(table.c.model_version == from_version),
            )
        )
    # counted, not the cursor's rowcount: psycopg reports -1 for INSERT ... SELECT here
    return sum(count_neighbour_rows(url, version=to_version).values())


def drop_neighbours(url: str, *, version: int) -> None:
    with session_scope(url) as s:
        s.execute(delete(ItemNeighbours).where(ItemNeighbours.model_version == version))


def count_neighbour_rows(url: str, *, version: int) -> dict[str, int]:
    """Rows per kind of a version's neighbour lists."""
    with session_scope(url) as s:
        rows = s.execute(
            select(ItemNeighbours.kind, func.count())
            .where(ItemNeighbours.model_version == version)
            .group_by(ItemNeighbours.kind)
        ).all()
    return {str(k): int(n) for k, n in rows}


def bulk_insert(
    url: str,
    table: str,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    *,
    chunk: int = 50_000,
    before: Sequence[tuple[str, Sequence[str], Sequence[tuple[Any, ...]]]] = (),
) -> int:
    """Insert many rows fast (COPY on PostgreSQL, chunked executemany elsewhere) in ONE transaction,
    together with the few ``before`` rows (table, columns, rows). Returns the rows of ``table``."""
    engine = get_engine(url)
    raw = engine.raw_connection()
    written = 0
    try:
        cur = raw.cursor()
        for name, cols, few in before:
            marks = ", ".join(("%s" if engine.dialect.name == "postgresql" else "?") for _ in cols)
            cur.executemany(f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({marks})", list(few))
        if engine.dialect.name == "postgresql":
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    written += 1
        else:
            marks = ", ".join("?" for _ in columns)
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            batch: list[tuple[Any, ...]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= chunk:
                    cur.executemany(sql, batch)
                    written += len(batch)
                    batch = []
            if batch:
                cur.executemany(sql, batch)
                written += len(batch)
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()
    return written


def drop_artifacts(url: str, *, versions: Iterable[int]) -> None:
    """Delete the (large) factor, top-N and neighbour rows of versions that will never serve again."""
    versions = list(versions)
    if not versions:
        return
    with session_scope(url) as s:
        s.execute(delete(AlsTopN).where(AlsTopN.model_version.in_(versions)))
        s.execute(delete(AlsItemIndex).where(AlsItemIndex.model_version.in_(versions)))
        s.execute(delete(AlsFactor).where(AlsFactor.model_version.in_(versions)))
        s.execute(delete(ItemNeighbours).where(ItemNeighbours.model_version.in_(versions)))


def prunable_versions(session: Session, *, kind: str, keep_retired: int = 1) -> list[int]:
    """Versions whose rows can go: rejected/failed ones and retired ones beyond the newest few."""
    rows = session.execute(
        select(AlsModel.version, AlsModel.status)
        .where(AlsModel.kind == kind)
        .order_by(AlsModel.version.desc())
    ).all()
    out, retired = [], 0
    for version, status in rows:
        if status in ("rejected", "failed"):
            out.append(version)
        elif status == "retired":
            retired += 1
            if retired > keep_retired:
                out.append(version)
    return out
