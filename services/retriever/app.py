"""HTTP API of the retriever (port 8002): candidates, item lookup, similar items, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request

from services.retriever.candidates import HistoryEntry
from services.retriever.config import RetrieverSettings, get_settings
from services.retriever.schemas import CandidatesRequest, CandidatesResponse
from services.retriever.service import RetrieverService
from shared.amazon import MAX_ID
from shared.http import NO_NUL_PATTERN, DomainError, FastJSON, install_common, require_bearer
from shared.logging import configure_logging


async def get_service(request: Request) -> RetrieverService:
    # async: a plain attribute read must not cost a thread-pool hop per request
    return request.app.state.retriever


ServiceDep = Annotated[RetrieverService, Depends(get_service)]


async def admin_authorized(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Operator actions (a refit costs minutes of CPU) need the admin key when one is configured."""
    settings: RetrieverSettings = request.app.state.settings
    require_bearer(settings.admin_keys, authorization)
AsinPath = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=NO_NUL_PATTERN)]

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
        fresh=body.fresh,
    ))


@router.get("/items/{parent_asin}")
def item(parent_asin: AsinPath, svc: ServiceDep) -> dict[str, Any]:
    """One item's display fields and statistics; 404 ``item_not_found``."""
    return svc.item(parent_asin=parent_asin)


@router.get("/items/{parent_asin}/similar")
def similar(
    parent_asin: AsinPath, svc: ServiceDep, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> dict[str, Any]:
    """Items nearest to this one in the embedding space."""
    return svc.similar(parent_asin=parent_asin, k=k)


@router.get("/ranker")
def ranker(svc: ServiceDep) -> dict[str, Any]:
    """The live ranking core: data version, sources, model (LambdaRank or blend) and the validation
    figures that chose it; ``{"ready": false}`` before the first fit or when it is switched off."""
    if svc.ranker is None:
        return {"ready": False, "enabled": False}
    return {"enabled": True, **svc.ranker.describe(), "precomputed": svc.precompute_info()}


@router.post("/ranker/refit", dependencies=[Depends(admin_authorized)])
async def refit_ranker(svc: ServiceDep) -> dict[str, Any]:
    """Refit the ranking core now if the reviews or items changed since the live one (the demo and
    operators use it after a bulk load); answers with the live core's description. 409 when off."""
    if svc.ranker is None:
        raise DomainError("the ranking core is switched off (RETRIEVER_RANKER=false)", code="ranker_disabled",
                          status_code=409)
    snap, _ = svc.current()
    refitted = await asyncio.to_thread(svc.ranker.refit, snap)
    return {"enabled": True, "refitted": refitted, **svc.ranker.describe()}


async def readiness(app: FastAPI) -> dict[str, Any]:
    """Model loaded, index and catalog served, database reachable ("starting" before the lifespan ran)."""
    svc: RetrieverService | None = getattr(app.state, "retriever", None)
    if svc is None:
        return {"service": {"ok": False, "error": "starting"}}
    return await asyncio.to_thread(svc.readiness)


def create_app(
    settings: RetrieverSettings | None = None, *, service: RetrieverService | None = None
) -> FastAPI:
    """App factory: the lifespan loads the embedding model and starts the index refresher.

    ``service``: an already built :class:`RetrieverService` (tests inject one with their encoder).
    """
    settings = settings or get_settings()

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
    app.state.settings = settings
    install_common(app, service="retriever", readiness=lambda: readiness(app))
    app.include_router(router)
    return app
