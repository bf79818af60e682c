"""HTTP API of the retriever (port 8002): candidates, item lookup, similar items, health."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.retriever.candidates import HistoryEntry
from services.retriever.config import RetrieverSettings, get_retriever_settings
from services.retriever.service import RetrieverService
from shared.amazon import MAX_ID
from shared.http import FastJSON, install_common
from shared.logging import configure_logging

MAX_EXCLUDE = 5_000


class AlsCandidate(BaseModel):
    parent_asin: str = Field(min_length=1, max_length=MAX_ID)
    score: float = Field(allow_inf_nan=False)


class HistoryItem(BaseModel):
    parent_asin: str = Field(min_length=1, max_length=MAX_ID)
    rating: float = Field(ge=0, le=5, allow_inf_nan=False)
    timestamp: int = Field(ge=0, description="ms since the epoch")


class CandidatesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: str | None = Field(None, min_length=1, max_length=MAX_ID)
    profile_text: str | None = Field(None, max_length=20_000)
    profile_vector: list[float] | None = Field(None, max_length=4096, description="normalized profile vector")
    strategy: Literal["hybrid", "llm_only", "popular"] = "hybrid"
    k: int | None = Field(None, ge=1, le=200, description="default 10; llm_only: candidates for the LLM (50)")
    exclude: list[Annotated[str, Field(min_length=1, max_length=MAX_ID)]] = Field(
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


class CandidatesResponse(BaseModel):
    user_id: str | None
    strategy: str
    cold_start: bool
    index_version: str
    items: list[CandidateItem]
    als_version: int | None = Field(
        None, description="hybrid: the live ALS model whose top-N was blended in (None: none was)"
    )


async def get_service(request: Request) -> RetrieverService:
    # async: a plain attribute read must not cost a thread-pool hop per request
    return request.app.state.retriever


ServiceDep = Annotated[RetrieverService, Depends(get_service)]
AsinPath = Annotated[str, Path(min_length=1, max_length=MAX_ID)]

router = APIRouter(prefix="/v1", tags=["retriever"])


@router.post("/candidates", response_model=CandidatesResponse)
async def candidates(body: CandidatesRequest, svc: ServiceDep) -> FastJSON:
    """Candidate items for a user (id, profile text or vector) by strategy, with provenance.

    Runs on the event loop on purpose: the work is a few milliseconds of CPU (FAISS, numpy, one
    indexed read), and the two thread-pool hops a sync endpoint costs (call + response validation)
    measured several times more than the work itself under concurrent load.
    """
    als = [(c.parent_asin, c.score) for c in body.als_candidates] if body.als_candidates is not None else None
    # CandidateResult.to_dict builds exactly the CandidatesResponse shape (tests check it against the
    # model); serialized directly, it skips a validation pass per request.
    return FastJSON(svc.candidates(
        user_id=body.user_id,
        profile_text=body.profile_text,
        strategy=body.strategy,
        k=body.k,
        exclude=body.exclude,
        als_candidates=als,
        profile_vector=body.profile_vector,
        history=(
            [HistoryEntry(h.parent_asin, h.rating, h.timestamp) for h in body.history]
            if body.history is not None
            else None
        ),
        profile_version=body.profile_version,
    ))


@router.get("/items/{parent_asin}")
def item(parent_asin: AsinPath, svc: ServiceDep) -> dict[str, Any]:
    """One item's display fields and statistics; 404 ``item_not_found``."""
    return svc.item(parent_asin)


@router.get("/items/{parent_asin}/similar")
def similar(
    parent_asin: AsinPath, svc: ServiceDep, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> dict[str, Any]:
    """Items nearest to this one in the embedding space."""
    return svc.similar(parent_asin, k)


def create_app(
    settings: RetrieverSettings | None = None, *, service: RetrieverService | None = None
) -> FastAPI:
    """App factory: the lifespan loads the embedding model and starts the index refresher."""
    settings = settings or get_retriever_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is None:
            configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
        svc = service or RetrieverService(settings)
        await asyncio.to_thread(svc.start)
        app.state.retriever = svc
        try:
            yield
        finally:
            await asyncio.to_thread(svc.stop)

    app = FastAPI(title="recsys retriever", version="1.0", lifespan=lifespan)

    async def readiness() -> dict[str, Any]:
        svc: RetrieverService | None = getattr(app.state, "retriever", None)
        if svc is None:
            return {"service": {"ok": False, "error": "starting"}}
        return await asyncio.to_thread(svc.readiness)

    install_common(app, service="retriever", readiness=readiness)
    app.include_router(router)
    return app
