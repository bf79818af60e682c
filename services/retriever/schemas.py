"""Request and response models of the retriever's HTTP API."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.amazon import MAX_ID
from shared.http import NO_NUL_PATTERN

MAX_EXCLUDE = 5_000
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=NO_NUL_PATTERN)]


class AlsCandidate(BaseModel):
    parent_asin: Id
    score: float = Field(allow_inf_nan=False)


class HistoryItem(BaseModel):
    parent_asin: Id
    rating: float = Field(ge=0, le=5, allow_inf_nan=False)
    timestamp: int = Field(ge=0, description="ms since the epoch")


class CandidatesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: Id | None = None
    profile_text: str | None = Field(None, max_length=20_000)
    profile_vector: list[float] | None = Field(None, max_length=4096, description="normalized profile vector")
    strategy: Literal["hybrid", "llm_only", "popular"] = "hybrid"
    k: int | None = Field(None, ge=1, le=200, description="default 10; llm_only: candidates for the LLM (50)")
    exclude: list[Id] = Field(
        default_factory=list, max_length=MAX_EXCLUDE
    )
    als_candidates: list[AlsCandidate] | None = Field(
        None,
        max_length=MAX_EXCLUDE,
        description="hybrid: ALS candidates to blend; omitted: the user's top-N of the live ALS model is "
        "read from the database (RETRIEVER_ALS_BLEND); []: no ALS blend",
    )

    history: list[HistoryItem] | None = Field(
        None,
        max_length=MAX_EXCLUDE,
        description="the user's reviews as the caller just read them; given, the retriever does not read "
        "them from the database (it uses the most recent RETRIEVER_HISTORY_MAX)",
    )
    profile_version: int | None = Field(
        None,
        ge=0,
        description="the user's profile version as the caller just read it (0: no profile row); given, "
        "the stored profile is reused from the retriever's cache for that version",
    )
    fresh: bool = Field(
        False, description="hybrid: compute the answer now instead of serving the one precomputed for "
        "the same inputs (the two are the same list; this measures or checks the computation)",
    )

    @field_validator("profile_vector")
    @classmethod
    def _finite(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) for x in v):
            raise ValueError("profile_vector must contain finite numbers")
        return v


class CandidateItem(BaseModel):
    parent_asin: str
    title: str
    score: float
    average_rating: float | None
    rating_number: int
    main_category: str | None
    features: list[str]
    source: Literal["hybrid", "llm_only", "popular", "als"]
    channel: str | None = Field(
        None, description="hybrid: the candidate source that ranks it best (coreview, transitions, "
        "transitions_wide, lexical, reviews, embedding, popular); None for the other strategies")


class CandidatesResponse(BaseModel):
    user_id: str | None
    strategy: str
    cold_start: bool
    index_version: str
    items: list[CandidateItem]
    ranker_version: str | None = Field(
        None, description="hybrid: the ranking core (data version) that ranked the items; None: the vector pipeline"
    )
    als_version: int | None = Field(
        None, description="hybrid: the live ALS model whose top-N was blended in (None: none was)"
    )
    precomputed: bool = Field(
        False, description="hybrid: the answer was computed ahead (or by an earlier request) for exactly "
        "these inputs and the live models, not in this request",
    )
