"""The ingest writes: change-detecting upserts of reviews and items, with their outbox rows.

Rows are upserted and, in the SAME transaction, an outbox event is written for every row that is new
or actually changed (compared by ``row_hash``), so a replay or a duplicate POST stores one row and
emits one event. This is the hot path of the service, so the outbox rows are written in one bulk
statement per batch here rather than one :func:`shared.outbox.add` (one INSERT round trip) per row;
they are the same rows (logical topic, key, JSON payload) and :class:`shared.outbox.OutboxRelay`
publishes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.ingest.schemas import Kind
from shared.amazon import ItemIn, ReviewIn, item_text
from shared.db import session_scope
from shared.events import ITEMS, REVIEWS, ItemEvent, ReviewEvent
from shared.models import Item, OutboxEvent, Review, utcnow

REVIEW_KEY = ("user_id", "parent_asin", "timestamp")
ITEM_KEY = ("parent_asin",)


def _hash(obj: Any) -> str:
    return hashlib.sha1(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def review_row(r: ReviewIn) -> dict[str, Any]:
    row = {
        "user_id": r.user_id,
        "parent_asin": r.parent_asin,
        "asin": r.asin,
        "timestamp": r.timestamp,
        "rating": float(r.rating),
        "title": r.title,
        "text": r.text,
        "helpful_vote": r.helpful_vote,
        "verified_purchase": r.verified_purchase,
        "images": r.images,
        "extra": r.extra_fields,
    }
    row["row_hash"] = _hash(row)
    return row


def item_row(i: ItemIn) -> dict[str, Any]:
    # Columns the items table lacks (images, videos, bought_together) are kept in ``extra``.
    extra = {"images": i.images, "videos": i.videos, "bought_together": i.bought_together, **i.extra_fields}
    row = {
        "parent_asin": i.parent_asin,
        "title": i.title,
        "main_category": i.main_category,
        "store": i.store,
        "price": i.price,
        "average_rating": i.average_rating,
        "rating_number": i.rating_number,
        "features": i.features,
        "description": i.description,
        "categories": i.categories,
        "details": i.details,
        "extra": extra,
        "content_hash": hashlib.sha1(item_text(i).encode()).hexdigest(),
    }
    row["row_hash"] = _hash(row)
    return row


@lru_cache(maxsize=16)
def _upsert_statement(dialect: str, table: Any, key: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    """``INSERT … ON CONFLICT (key) DO UPDATE … WHERE row_hash differs RETURNING key``, built once.

    Executed with a list of parameter sets (executemany), so SQLAlchemy caches the compiled form and
    batches the VALUES itself ("insertmanyvalues"); compiling a 500-row VALUES clause per request
    cost more than the database work.
    """
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise RuntimeError(f"upsert not implemented for dialect {dialect!r}")
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={c: excluded[c] for c in columns if c not in key and c != "created_at"},
        where=table.c.row_hash.is_distinct_from(excluded.row_hash),
    ).returning(*[table.c[k] for k in key])


@lru_cache(maxsize=16)
def _pg_bulk_sql(table: Any, columns: tuple[str, ...], key: tuple[str, ...] = ()) -> Any:
    """PostgreSQL: the whole batch as ONE json parameter unpacked by ``json_to_recordset``.

    A short, constant statement instead of a VALUES list of thousands of parameters that the driver
    rewrites on every request (that rewrite cost more than the database work). With ``key`` it is the
    change-detecting upsert: ``ON CONFLICT DO UPDATE … WHERE row_hash differs RETURNING key``.
    """
    dialect = postgresql.dialect()
    q = dialect.identifier_preparer.quote
    name = q(table.name)
    cols = ", ".join(q(c) for c in columns)
    typed = ", ".join(f"{q(c)} {table.c[c].type.compile(dialect=dialect)}" for c in columns)
    sql = (
        f"INSERT INTO {name} ({cols}) SELECT {cols} FROM json_to_recordset(CAST(:rows AS json)) AS x({typed})"
    )
    if key:
        updates = ", ".join(
            f"{q(c)} = EXCLUDED.{q(c)}" for c in columns if c not in key and c != "created_at"
        )
        sql += (
            f" ON CONFLICT ({', '.join(q(k) for k in key)}) DO UPDATE SET {updates}"
            f" WHERE {name}.row_hash IS DISTINCT FROM EXCLUDED.row_hash"
            f" RETURNING {', '.join(f'{name}.{q(k)}' for k in key)}"
        )
    return text(sql)


def _pg_rows(params: list[dict[str, Any]]) -> dict[str, str]:
    return {"rows": orjson.dumps(params, default=str).decode()}


def _upsert_changed(
    session: Session, table: Any, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """Upsert rows; return the keys of rows inserted or changed (an identical row is left alone)."""
    if not rows:
        return []
    now = utcnow()
    params = [{**r, "created_at": now, "updated_at": now} for r in rows]
    columns = tuple(params[0])
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        result = session.execute(_pg_bulk_sql(table, columns, key), _pg_rows(params))
    else:
        result = session.execute(_upsert_statement(dialect, table, key, columns), params)
    return [tuple(row) for row in result]


def _dedupe(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    # One statement may not touch a row twice: within a batch the last record of a key wins.
    return {tuple(r[k] for k in key): r for r in rows}


def _store_changed(
    session: Session,
    table: Any,
    rows: list[dict[str, Any]],
    key: tuple[str, ...],
    topic: str,
    event: Callable[[dict[str, Any]], tuple[str, BaseModel]],
) -> int:
    """Upsert ``rows`` and write one outbox event (``event(row)`` → key, payload) per new/changed row."""
    if not rows:
        return 0
    by_key = _dedupe(rows, key)
    changed = _upsert_changed(session, table, list(by_key.values()), key)
    events = []
    for k in changed:
        event_key, payload = event(by_key[k])
        events.append({"topic": topic, "key": event_key, "payload": payload.model_dump(mode="json")})
    _add_outbox_rows(session, events)
    return len(events)


def _review_event(row: dict[str, Any]) -> tuple[str, BaseModel]:
    fields = ("user_id", "parent_asin", "timestamp", "rating", "title", "text", "verified_purchase", "helpful_vote")
    return row["user_id"], ReviewEvent(**{f: row[f] for f in fields})


def _item_event(row: dict[str, Any]) -> tuple[str, BaseModel]:
    fields = ("parent_asin", "title", "main_category", "content_hash")
    return row["parent_asin"], ItemEvent(**{f: row[f] for f in fields})


def _add_outbox_rows(session: Session, events: list[dict[str, Any]]) -> None:
    """The bulk form of :func:`shared.outbox.add`: every event of a batch in one statement."""
    if not events:
        return
    now = utcnow()
    params = [{**e, "created_at": now, "attempts": 0} for e in events]
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_pg_bulk_sql(OutboxEvent.__table__, tuple(params[0])), _pg_rows(params))
    else:
        session.execute(insert(OutboxEvent), params)


def store_reviews(*, session: Session, reviews: Sequence[ReviewIn]) -> int:
    """Upsert reviews and write a reviews.v1 outbox event per new/changed row; returns that count."""
    rows = [review_row(r) for r in reviews]
    return _store_changed(session, Review.__table__, rows, REVIEW_KEY, REVIEWS, _review_event)


def store_items(*, session: Session, items: Sequence[ItemIn]) -> int:
    """Upsert items and write an items.v1 outbox event per new/changed row; returns that count."""
    rows = [item_row(i) for i in items]
    return _store_changed(session, Item.__table__, rows, ITEM_KEY, ITEMS, _item_event)


def upsert(*, session: Session, kind: Kind, models: Sequence[Any]) -> int:
    """Store validated records of ``kind`` in the caller's transaction; returns the events written."""
    if kind == "reviews":
        return store_reviews(session=session, reviews=models)
    return store_items(session=session, items=models)


# SQLite has one writer at a time and its busy handler polls with sleeps: writers of this process
# queue on a lock instead (a large gain under concurrent requests). PostgreSQL needs no such thing.
_SQLITE_WRITE_LOCK = threading.Lock()


def write(*, database_url: str, kind: Kind, models: Sequence[Any]) -> int:
    """:func:`upsert` in a transaction of its own; returns the events written."""
    lock = _SQLITE_WRITE_LOCK if database_url.startswith("sqlite") else contextlib.nullcontext()
    with lock, session_scope(database_url) as session:
        return upsert(session=session, kind=kind, models=models)
