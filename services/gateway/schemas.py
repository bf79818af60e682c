"""The gateway's public API shapes (the HTTP contract in ARCHITECTURE.md).

The recommendations endpoint serializes its dict directly (``shared.http.FastJSON``); these models
document the answer in OpenAPI and the tests validate every answer against them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

GatewayStrategy = Literal["hybrid", "als", "llm_only", "popular"]
ReasonsBackend = Literal["auto", "template", "llm"]  # which explainer backend the gateway asks for
ReasonSource = Literal["llm", "template"]


class RecommendedItem(BaseModel):
    parent_asin: str
    title: str
    score: float | None = Field(description="the strategy's own score (not comparable across strategies)")
    average_rating: float | None
    reason: str = Field(description="one short personalized reason or ad line")
    source: GatewayStrategy = Field(description="which path produced it")
    channel: str | None = Field(
        None, description="hybrid: the candidate source that ranks it best (coreview, transitions, lexical, "
        "embedding, popular); None elsewhere")
    reason_source: ReasonSource


class RecommendationsResponse(BaseModel):
    """The answer's shape (documentation: the endpoint serializes its dict directly; tests validate it)."""

    user_id: str
    strategy: GatewayStrategy
    cold_start: bool
    degraded: bool = Field(description="a fallback was used; ``notes`` says which")
    items: list[RecommendedItem]
    notes: list[str] = Field(description="machine-readable fallback notes, e.g. explainer:timeout")
    rerank: Literal["stored", "pending", "inline", "none"] | None = Field(
        None, description="llm_only: stored = the LLM worker's re-rank for this profile and catalog; pending = "
        "the semantic-matching order with template reasons while the re-rank is queued; none = no LLM "
        "(or the explainer failed); null for the other strategies")
