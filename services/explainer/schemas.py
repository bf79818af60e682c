"""Request and response bodies of the explainer API (the HTTP contract in ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ITEMS = 100
MAX_CANDIDATES = 100
MAX_TERMS = 50


class ProfileIn(BaseModel):
    """The structured profile the profiler writes (only the fields reasons use)."""

    model_config = ConfigDict(extra="ignore")

    preferred_products: list[str] = Field(default_factory=list, max_length=MAX_TERMS)
    liked_features: list[str] = Field(default_factory=list, max_length=MAX_TERMS)
    dislikes: list[str] = Field(default_factory=list, max_length=MAX_TERMS)
    potential_interests: list[str] = Field(default_factory=list, max_length=MAX_TERMS)


class ItemFacts(BaseModel):
    """What a reason may mention about an item: its own title, features and rating facts."""

    model_config = ConfigDict(extra="ignore")

    parent_asin: str = Field(min_length=1, max_length=128)
    title: str = Field("", max_length=5_000)
    features: list[str] = Field(default_factory=list, max_length=200)
    average_rating: float | None = Field(None, ge=0, le=5)
    rating_number: int | None = Field(None, ge=0)
    main_category: str | None = Field(None, max_length=256)


Backend = Literal["auto", "template", "llm"]


class ExplainRequest(BaseModel):
    user_id: str | None = Field(None, max_length=128)
    profile: ProfileIn | None = None
    summary: str | None = Field(None, max_length=5_000)
    profile_version: int = Field(0, ge=0)
    items: list[ItemFacts] = Field(max_length=MAX_ITEMS)
    backend: Backend = "auto"
    templates: bool = Field(
        True, description="false: return only the items that have an LLM reason; the caller renders the "
        "templates for the rest itself (the gateway does, with the same shared.reasons code)")
    queue: bool = Field(
        True, description="false: queue no LLM reasons for the items that lack one (the caller computes an "
        "answer ahead of any request)")


class Explanation(BaseModel):
    parent_asin: str
    reason: str
    source: Literal["llm", "template"]


class ExplainResponse(BaseModel):
    explanations: list[Explanation]
    backend: str
    degraded: bool = Field(description="a dependency failed or ran out of time (never: the LLM has not caught up)")
    pending: int = Field(
        0, description="items answered with a template while their LLM reason is written in the background")


RerankMode = Literal["auto", "inline"]


class RerankRequest(BaseModel):
    user_id: str | None = Field(None, max_length=128)
    summary: str | None = Field(None, max_length=5_000)
    candidates: list[ItemFacts] = Field(max_length=MAX_CANDIDATES)
    k: int = Field(5, ge=1, le=50)
    profile_version: int = Field(0, ge=0, description="the user's profile version (part of the stored re-rank's key)")
    catalog_version: str | None = Field(
        None, max_length=128,
        description="the retriever's index version the candidates came from (part of the stored re-rank's "
        "key); None: the candidates' own fingerprint")
    mode: RerankMode = Field(
        "auto",
        description="auto: the stored re-rank, or at once the retriever order with template reasons while the "
        "LLM worker writes it (rerank=pending); inline: run the LLM now (the offline evaluation)")
    queue: bool = Field(
        True, description="false: a pending re-rank is not queued (the caller computes an answer ahead of any "
        "request; the profile's own precompute queues it)")


class RankedItem(BaseModel):
    parent_asin: str
    rank: int
    reason: str
    source: Literal["llm", "template"] = "llm"


class RerankResponse(BaseModel):
    items: list[RankedItem]
    parsed: int = Field(description="ranks that came from the model (k when label scoring answered)")
    fallback: bool
    backend: str = ""
    method: Literal["label_logits", "text", "none"] = Field(
        "none", description="label_logits: one forward pass scored every candidate's label (always k); "
        "text: generated and parsed; none: retriever order (no LLM)")
    rerank: Literal["stored", "pending", "inline", "none"] = Field(
        "none", description="stored: the LLM worker's re-rank for this user, profile and catalog version; "
        "pending: retriever order while it is queued; inline: run in this request (mode=inline); none: no LLM")
