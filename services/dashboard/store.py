"""The dashboard's reads that no service exposes over HTTP: the database (read-only), the broker's
offsets and the Celery queue.

Every function here is blocking; ``service`` runs each in a worker thread under its own timeout, so a
dependency that hangs renders as "down" instead of holding the page. Nothing here writes: the one write
the dashboard makes (the test review) goes through the ingest API like any client's.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, text

from shared.config import CommonSettings
from shared.db import get_engine, read_connection
from shared.models import Item, OutboxEvent, Review

# ---- users ---------------------------------------------------------------------------------------

_HISTORY = (
    select(
        Review.parent_asin, Review.rating, Review.title, Review.text, Review.timestamp, Item.title.label("item_title")
    )
    .join(Item, Item.parent_asin == Review.parent_asin, isouter=True)
    .where(Review.user_id == bindparam("user_id"))
    .order_by(Review.timestamp.desc())
    .limit(bindparam("limit"))
)
_N_REVIEWS = select(func.count()).select_from(Review).where(Review.user_id == bindparam("user_id"))


def user_history(url: str, *, user_id: str, limit: int, snippet_chars: int = 160) -> dict[str, Any]:
    """The user's most recent reviews with item titles and a snippet of each text, and their count."""
    with read_connection(url) as conn:
        total = int(conn.execute(_N_REVIEWS, {"user_id": user_id}).scalar_one())
        rows = conn.execute(_HISTORY, {"user_id": user_id, "limit": limit}).all() if total else []
    reviews = [
        {
            "parent_asin": r.parent_asin,
            "item_title": r.item_title or "",
            "rating": float(r.rating),
            "review_title": r.title or "",
            "snippet": _snippet(r.text or "", snippet_chars),
            "date": _ms_to_date(r.timestamp),
        }
        for r in rows
    ]
    return {"total": total, "reviews": reviews}


def _snippet(text_: str, n: int) -> str:
    text_ = " ".join(text_.split())
    return text_ if len(text_) <= n else text_[: n - 1].rstrip() + "…"


def _ms_to_date(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


# ---- items ---------------------------------------------------------------------------------------

_ITEM_STATS = select(func.count(), func.avg(Review.rating)).where(Review.parent_asin == bindparam("asin"))


def item_details(url: str, *, parent_asin: str) -> dict[str, Any] | None:
    """The item's stored metadata plus its review count and mean rating; None if neither exists."""
    with read_connection(url) as conn:
        row = conn.execute(select(Item).where(Item.parent_asin == parent_asin)).mappings().first()
        n, mean = conn.execute(_ITEM_STATS, {"asin": parent_asin}).one()
    if row is None and not n:
        return None
    meta = dict(row) if row is not None else {}
    return {
        "parent_asin": parent_asin,
        "in_catalog": row is not None,
        "title": meta.get("title") or "",
        "main_category": meta.get("main_category"),
        "store": meta.get("store"),
        "price": meta.get("price"),
        "meta_average_rating": meta.get("average_rating"),
        "meta_rating_number": meta.get("rating_number"),
        "features": [str(f) for f in (meta.get("features") or [])][:20],
        "description": [str(d) for d in (meta.get("description") or [])][:5],
        "categories": [str(c) for c in (meta.get("categories") or [])][:10],
        "n_reviews": int(n or 0),
        "mean_rating": None if mean is None else round(float(mean), 3),
    }


# Users who reviewed the item (the most recent reviewers, bounded), the other items they reviewed,
# and each neighbour's own reviewer count for the cosine of the binary user x item columns (the
# measure of the retriever's co-review source).
_COREVIEW = text(
    """
    WITH reviewers AS (
        SELECT DISTINCT user_id FROM (
            SELECT user_id FROM reviews WHERE parent_asin = :asin ORDER BY timestamp DESC LIMIT :max_users
        ) recent
    ),
    co AS (
        SELECT r.parent_asin, COUNT(DISTINCT r.user_id) AS n_common
        FROM reviews r JOIN reviewers u ON u.user_id = r.user_id
        WHERE r.parent_asin <> :asin
        GROUP BY r.parent_asin
        ORDER BY n_common DESC
        LIMIT :pool
    )
    SELECT co.parent_asin, co.n_common,
           (SELECT COUNT(DISTINCT x.user_id) FROM reviews x WHERE x.parent_asin = co.parent_asin) AS n_item,
           i.title
    FROM co LEFT JOIN items i ON i.parent_asin = co.parent_asin
    """
)


def coreview_neighbours(url: str, *, parent_asin: str, k: int, max_users: int = 2000) -> list[dict[str, Any]]:
    """Items most often reviewed by the same users, by cosine of their reviewer sets."""
    with read_connection(url) as conn:
        n_self = int(conn.execute(
            select(func.count(func.distinct(Review.user_id))).where(Review.parent_asin == parent_asin)
        ).scalar_one())
        rows = conn.execute(_COREVIEW, {"asin": parent_asin, "max_users": max_users, "pool": k * 5}).all()
    out = []
    for asin, common, n_item, title in rows:
        cosine = common / math.sqrt(max(1, n_self) * max(1, n_item or 1))
        out.append({"parent_asin": asin, "title": title or "", "common_users": int(common),
                    "score": round(cosine, 4)})
    out.sort(key=lambda r: (-r["score"], -r["common_users"], r["parent_asin"]))
    return out[:k]


# ---- pipeline state ------------------------------------------------------------------------------

_PENDING = select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.published_at.is_(None))


def outbox_backlog(url: str) -> dict[str, Any]:
    """Outbox rows not yet published and the age of the oldest one."""
    with read_connection(url) as conn:
        n, oldest = conn.execute(_PENDING).one()
    age = None
    if oldest is not None:
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
    return {"pending": int(n or 0), "oldest_age_s": None if age is None else round(age, 1)}


def reviews_per_minute(url: str, *, minutes: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """Reviews stored (first ingested: ``created_at``) in each of the last ``minutes`` minutes, oldest first."""
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=minutes - 1)
    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        bucket = func.to_char(func.date_trunc("minute", Review.created_at.op("AT TIME ZONE")("UTC")),
                              "YYYY-MM-DD HH24:MI")
    else:
        bucket = func.strftime("%Y-%m-%d %H:%M", Review.created_at)
    query = (
        select(bucket.label("minute"), func.count())
        .where(Review.created_at >= start)
        .group_by("minute")
    )
    with read_connection(url) as conn:
        counts = {str(m): int(n) for m, n in conn.execute(query).all()}
    out = []
    for i in range(minutes):
        t = start + timedelta(minutes=i)
        out.append({"minute": t.strftime("%H:%M"), "count": counts.get(t.strftime("%Y-%m-%d %H:%M"), 0)})
    return out


# ---- Celery queue --------------------------------------------------------------------------------


def queue_length(settings: CommonSettings, *, queue: str, timeout_s: float) -> dict[str, Any]:
    """Jobs waiting in a Celery queue: ``LLEN`` on Redis, visible rows on the SQLAlchemy transport."""
    broker = settings.celery_broker_url
    if broker.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(broker, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            return {"queue": queue, "length": int(client.llen(queue)), "transport": "redis"}
        finally:
            client.close()
    if broker.startswith("sqla+"):
        from sqlalchemy import inspect

        engine = get_engine(broker.removeprefix("sqla+"))
        if not inspect(engine).has_table("kombu_message"):
            return {"queue": queue, "length": 0, "transport": "sqlalchemy"}
        with engine.connect() as conn:
            n = conn.execute(
                text(
                    "SELECT COUNT(*) FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id "
                    "WHERE q.name = :queue AND m.visible"
                ),
                {"queue": queue},
            ).scalar_one()
        return {"queue": queue, "length": int(n), "transport": "sqlalchemy"}
    raise ValueError(f"queue length is not implemented for this Celery transport ({broker.split(':', 1)[0]})")


# ---- broker: topics, consumer groups, lag --------------------------------------------------------


def broker_topics(settings: CommonSettings, *, timeout_s: float) -> dict[str, Any]:
    """Each topic of this deployment (its prefix) with its end offsets, and every consumer group's lag.

    Lag per group and topic is the sum over partitions of end offset minus committed offset.
    """
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from shared.kafka import broker_reachable, make_admin, make_consumer

    t0 = time.monotonic()
    ms = int(timeout_s * 1000)
    if not broker_reachable(settings, timeout_s=timeout_s):  # fails fast; make_admin would wait longer
        raise ConnectionError(f"no broker answers at {settings.KAFKA_BOOTSTRAP}")
    admin = make_admin(settings)
    consumer: KafkaConsumer = make_consumer(settings, group_id=None, request_timeout_ms=max(ms, 5000))
    try:
        prefix = settings.TOPIC_PREFIX
        names = sorted(t for t in admin.list_topics() if t.startswith(prefix) and not t.startswith("__"))
        partitions = {}
        for name in names:
            parts = consumer.partitions_for_topic(name) or set()
            partitions[name] = sorted(parts)
        tps = [TopicPartition(n, p) for n, ps in partitions.items() for p in ps]
        ends = _true_end_offsets(consumer, consumer.end_offsets(tps) if tps else {}, timeout_s=timeout_s / 2)
        topics = {n: {"name": n, "partitions": len(ps), "messages": 0, "groups": {}} for n, ps in partitions.items()}
        for tp, end in ends.items():
            topics[tp.topic]["messages"] += int(end or 0)
        groups = sorted(str(g["group_id"]) for g in admin.list_groups())
        for gid in groups:
            offsets = admin.list_group_offsets({gid: None}).get(gid, {})
            for tp, meta in offsets.items():
                if tp.topic not in topics or meta is None or meta.offset is None or meta.offset < 0:
                    continue
                lag = max(0, int(ends.get(tp, 0) or 0) - int(meta.offset))
                topics[tp.topic]["groups"][gid] = topics[tp.topic]["groups"].get(gid, 0) + lag
        return {
            "topics": [
                {**t, "groups": [{"group": g, "lag": lag} for g, lag in sorted(t["groups"].items())]}
                for t in topics.values()
            ],
            "seconds": round(time.monotonic() - t0, 2),
        }
    finally:
        consumer.close()
        admin.close()


def _true_end_offsets(consumer: Any, ends: dict[Any, int], *, timeout_s: float) -> dict[Any, int]:
    """End offsets checked against the last record actually stored.

    The dev broker (tansu) answers ListOffsets(latest) with the base offset of the partition's last
    record batch plus one, so five records produced in one batch look like one. Reading from the
    reported end minus one returns that last batch (one small fetch per partition); its last offset + 1
    is the real end. On Apache Kafka the two agree and this changes nothing.
    """
    present = {tp: end for tp, end in ends.items() if end and end > 0}
    if not present:
        return dict(ends)
    consumer.assign(list(present))
    for tp, end in present.items():
        consumer.seek(tp, end - 1)
    fixed = dict(ends)
    pending = set(present)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200, max_records=10_000).items():
            if records:
                fixed[tp] = max(fixed.get(tp, 0), records[-1].offset + 1)
                pending.discard(tp)
                consumer.pause(tp)  # its last batch is read; later records do not matter here
    return fixed
