"""Versioned event schemas for the Kafka topics (the payloads are JSON objects).

Topic names are constants here; a deployment may prefix them (``RECSYS_TOPIC_PREFIX``).
Every event carries ``event_id`` (stable for the same fact, so replays are recognisable),
``schema_version`` and ``produced_at`` besides its data.
"""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REVIEWS_RAW = "reviews.raw.v1"
ITEMS_RAW = "items.raw.v1"
REVIEWS_DLQ = "reviews.dlq.v1"
ITEMS_DLQ = "items.dlq.v1"
REVIEWS = "reviews.v1"
ITEMS = "items.v1"
PROFILES = "profiles.v1"
MODELS = "models.v1"
ALL_TOPICS = [REVIEWS_RAW, ITEMS_RAW, REVIEWS_DLQ, ITEMS_DLQ, REVIEWS, ITEMS, PROFILES, MODELS]
_RAW_DLQ = {REVIEWS_RAW: REVIEWS_DLQ, ITEMS_RAW: ITEMS_DLQ}


def dead_letter_topic(topic: str) -> str:
    """Where a consumer of ``topic`` (logical name) puts the records it can never process.

    The raw topics keep their established ``*.dlq.v1``; every other topic gets ``<topic>.dlq``
    (e.g. ``reviews.v1.dlq``), shared by its consumer groups: a letter names the group it came from.
    """
    return _RAW_DLQ.get(topic, f"{topic}.dlq")


def stable_id(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    event_id: str = ""
    produced_at: str = Field(default_factory=_now)


class ReviewEvent(Event):
    """reviews.v1, key user_id: a stored (new or updated) review."""

    type: Literal["review.upserted"] = "review.upserted"
    user_id: str
    parent_asin: str
    timestamp: int
    rating: float
    title: str = ""
    text: str = ""
    verified_purchase: bool | None = None
    helpful_vote: int | None = None

    def model_post_init(self, __context: Any) -> None:
        if not self.event_id:
            self.event_id = stable_id("review", self.user_id, self.parent_asin, self.timestamp)


class ItemEvent(Event):
    """items.v1, key parent_asin: a stored (new or changed) item; consumers re-read the row if needed."""

    type: Literal["item.upserted"] = "item.upserted"
    parent_asin: str
    title: str = ""
    main_category: str | None = None
    content_hash: str = ""

    def model_post_init(self, __context: Any) -> None:
        if not self.event_id:
            self.event_id = stable_id("item", self.parent_asin, self.content_hash)


class ProfileEvent(Event):
    """profiles.v1, key user_id: a profile was written (status ready or cold_start)."""

    type: Literal["profile.updated"] = "profile.updated"
    user_id: str
    version: int
    status: str
    source: str = "llm"
    embedding: list[float] | None = None  # normalized profile vector, when the profiler computed one

    def model_post_init(self, __context: Any) -> None:
        if not self.event_id:
            self.event_id = stable_id("profile", self.user_id, self.version)


class ModelEvent(Event):
    """models.v1, key kind: a model version finished training (promoted or not)."""

    type: Literal["model.trained"] = "model.trained"
    model: str = "als"
    kind: str = "explicit"
    version: int
    promoted: bool
    metrics: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.event_id:
            self.event_id = stable_id("model", self.model, self.kind, self.version)


class DeadLetter(BaseModel):
    """A record no consumer could process (invalid, or failing every retry), with the reason and its origin."""

    source_topic: str
    consumer: str = ""  # the consumer group that gave up on it (empty: the raw validation path)
    partition: int
    offset: int
    error: str
    errors: list[dict[str, Any]] = Field(default_factory=list)
    raw: str
    produced_at: str = Field(default_factory=_now)
