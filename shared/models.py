"""SQLAlchemy 2.0 ORM models: the system of record every service reads and writes.

Identity: a review is ``(user_id, parent_asin, timestamp)``; an item is ``parent_asin``.
Schema changes go through Alembic (``shared/migrations``).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.amazon import MAX_ID  # the one id length: validation and every id column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("user_id", "parent_asin", "timestamp", name="uq_review_identity"),
        Index("ix_reviews_user_ts", "user_id", "timestamp"),
        Index("ix_reviews_item", "parent_asin"),
        Index("ix_reviews_updated_at", "updated_at"),  # retriever: incremental item statistics
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(MAX_ID))
    parent_asin: Mapped[str] = mapped_column(String(MAX_ID))
    asin: Mapped[str | None] = mapped_column(String(MAX_ID))
    timestamp: Mapped[int] = mapped_column(BigInteger)  # ms since epoch
    rating: Mapped[float] = mapped_column(Float)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    helpful_vote: Mapped[int | None] = mapped_column(Integer)
    verified_purchase: Mapped[bool | None] = mapped_column(Boolean)
    images: Mapped[list[Any]] = mapped_column(JSON, default=list)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # unknown fields, kept verbatim
    # sha1 of the canonical record (ingest): an upsert only counts as a change when it differs.
    row_hash: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (Index("ix_items_updated_at", "updated_at"),)  # retriever: incremental catalog refresh

    parent_asin: Mapped[str] = mapped_column(String(MAX_ID), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    main_category: Mapped[str | None] = mapped_column(String(256))
    store: Mapped[str | None] = mapped_column(String(256))
    price: Mapped[float | None] = mapped_column(Float)
    average_rating: Mapped[float | None] = mapped_column(Float)  # from metadata; may be absent
    rating_number: Mapped[int | None] = mapped_column(Integer)
    features: Mapped[list[Any]] = mapped_column(JSON, default=list)
    description: Mapped[list[Any]] = mapped_column(JSON, default=list)
    categories: Mapped[list[Any]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64), default="")  # of the embedded text
    # sha1 of the canonical record (ingest): an upsert only counts as a change when it differs.
    row_hash: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class OutboxEvent(Base):
    """Transactional outbox: written with the rows, published to Kafka by the relay."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "published_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times sent (a resend when > 1)
    last_error: Mapped[str | None] = mapped_column(Text)


class Profile(Base):
    """One row per user: the latest structured profile and three-sentence summary."""

    __tablename__ = "profiles"

    user_id: Mapped[str] = mapped_column(String(MAX_ID), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(32), default="ready")  # ready | cold_start | failed
    source: Mapped[str] = mapped_column(String(32), default="llm")  # llm | extractive
    preferred_products: Mapped[list[Any]] = mapped_column(JSON, default=list)
    liked_features: Mapped[list[Any]] = mapped_column(JSON, default=list)
    dislikes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    potential_interests: Mapped[list[Any]] = mapped_column(JSON, default=list)
    summary: Mapped[str] = mapped_column(Text, default="")
    summary_source: Mapped[str] = mapped_column(String(32), default="llm")
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32 little-endian, normalized
    # the dislikes embedded on their own (shared.text.dislikes_text), so a request never embeds them
    dislike_embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    model_name: Mapped[str] = mapped_column(String(256), default="")
    prompt_version: Mapped[str] = mapped_column(String(32), default="")
    n_reviews: Mapped[int] = mapped_column(Integer, default=0)
    last_review_ts: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class AlsModel(Base):
    """One trained ALS model version; exactly one per kind is ``live``."""

    __tablename__ = "als_models"
    __table_args__ = (Index("ix_als_models_kind_status", "kind", "status"),)

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), default="explicit")  # explicit | implicit
    status: Mapped[str] = mapped_column(String(16), default="training")  # training|live|retired|rejected|failed
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact_path: Mapped[str | None] = mapped_column(Text)
    n_users: Mapped[int] = mapped_column(Integer, default=0)
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    n_ratings: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    trained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[str | None] = mapped_column(String(64))  # the train request / Celery task that made it


class AlsLock(Base):
    """A lease (name, owner, expiry): one ALS training at a time across processes, PostgreSQL or SQLite."""

    __tablename__ = "als_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlsState(Base):
    """Small durable state of the ALS service (retrain trigger counters and offsets, last CV best)."""

    __tablename__ = "als_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class AlsTopN(Base):
    """The precomputed top-N of one user for one model version, best first: item ordinals into the
    version's :class:`AlsItemIndex` (int32 little-endian) and scores (float32 little-endian)."""

    __tablename__ = "als_topn"

    model_version: Mapped[int] = mapped_column(
        Integer, ForeignKey("als_models.version", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(MAX_ID), primary_key=True)
    items: Mapped[bytes] = mapped_column(LargeBinary)
    scores: Mapped[bytes] = mapped_column(LargeBinary)


class AlsItemIndex(Base):
    """The item ids of a model version in ordinal order (UTF-8, newline-separated)."""

    __tablename__ = "als_item_index"

    model_version: Mapped[int] = mapped_column(
        Integer, ForeignKey("als_models.version", ondelete="CASCADE"), primary_key=True
    )
    item_ids: Mapped[bytes] = mapped_column(LargeBinary)


class AlsFactor(Base):
    """User and item factor vectors plus biases of a model version (float32 bytes)."""

    __tablename__ = "als_factors"

    model_version: Mapped[int] = mapped_column(
        Integer, ForeignKey("als_models.version", ondelete="CASCADE"), primary_key=True
    )
    entity: Mapped[str] = mapped_column(String(8), primary_key=True)  # user | item
    entity_id: Mapped[str] = mapped_column(String(MAX_ID), primary_key=True)
    bias: Mapped[float] = mapped_column(Float, default=0.0)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ItemNeighbours(Base):
    """One item's neighbour list of one kind for a model version (``shared.neighbours``): co-review
    cosine (``coreview``) or "reviewed next / before" (``forward.w1``, ``backward.w1``, ...), computed
    by the Spark training job. ``neighbours``: ``[[parent_asin, score], ...]`` best first, ties by asin
    (an empty list for an item with none)."""

    __tablename__ = "item_neighbours"

    model_version: Mapped[int] = mapped_column(
        Integer, ForeignKey("als_models.version", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    parent_asin: Mapped[str] = mapped_column(String(MAX_ID), primary_key=True)
    neighbours: Mapped[list[Any]] = mapped_column(JSON, default=list)


class Explanation(Base):
    """Cache of generated reasons keyed by (user, profile version, item, model)."""

    __tablename__ = "explanations"
    __table_args__ = (
        UniqueConstraint("user_id", "profile_version", "parent_asin", "model_name", name="uq_explanation_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(MAX_ID))
    profile_version: Mapped[int] = mapped_column(Integer, default=0)
    parent_asin: Mapped[str] = mapped_column(String(MAX_ID))
    model_name: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))  # llm | template
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StoredRerank(Base):
    """The llm_only re-rank the explainer's LLM worker wrote, keyed by (user, profile version, catalog
    version, model): a request serves it instead of running the LLM. ``items``: ``[{"parent_asin",
    "rank", "reason", "source"}]``, best first."""

    __tablename__ = "reranks"
    __table_args__ = (
        UniqueConstraint("user_id", "profile_version", "catalog_version", "model_name", name="uq_rerank_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(MAX_ID))
    profile_version: Mapped[int] = mapped_column(Integer, default=0)
    catalog_version: Mapped[str] = mapped_column(String(128))
    model_name: Mapped[str] = mapped_column(String(256))
    items: Mapped[list[Any]] = mapped_column(JSON, default=list)
    method: Mapped[str] = mapped_column(String(32))  # label_logits | text
    parsed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
