"""Explainer HTTP service (port 8003): ``POST /v1/explanations``, ``POST /v1/rerank``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request

from services.explainer.config import ExplainerSettings, get_settings
from services.explainer.llm import LLMReasoner
from services.explainer.schemas import ExplainRequest, ExplainResponse, RerankRequest, RerankResponse
from services.explainer.service import Explainer, load_reasoner, readiness_info
from services.explainer.store import ReasonCache
from shared.db import database_check_async
from shared.http import install_common
from shared.logging import configure_logging


async def _explainer(request: Request) -> Explainer:
    # async: FastAPI would run a plain function in its thread pool, a thread hop per request
    return request.app.state.explainer


ExplainerDep = Annotated[Explainer, Depends(_explainer)]

router = APIRouter(prefix="/v1", tags=["explanations"])


@router.post("/explanations", response_model=ExplainResponse)
async def explanations(body: ExplainRequest, svc: ExplainerDep) -> ExplainResponse:
    """One short grounded reason per item, distinct across the list."""
    return await svc.explain(body)


@router.post("/rerank", response_model=RerankResponse)
async def rerank(body: RerankRequest, svc: ExplainerDep) -> RerankResponse:
    """LLM re-rank of candidates for the llm_only strategy (retriever order fills the gaps)."""
    return await svc.rerank(body)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the reasoner (the LLM) once and open the reason cache; stop the LLM thread on shutdown."""
    settings: ExplainerSettings = app.state.settings
    configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    reasoner = app.state.reasoner
    if reasoner is True:
        reasoner = await asyncio.to_thread(partial(load_reasoner, settings=settings))
    db_url = settings.database_url if settings.EXPLAINER_DB_CACHE else None
    cache = ReasonCache(database_url=db_url, lru_size=settings.EXPLAINER_CACHE_SIZE)
    app.state.explainer = Explainer(settings=settings, reasoner=reasoner or None, cache=cache)
    try:
        yield
    finally:
        app.state.explainer.close()


async def readiness(app: FastAPI) -> dict[str, Any]:
    """The model (LLM loaded or template-only) and, when used, the cache database."""
    settings: ExplainerSettings = app.state.settings
    checks: dict[str, Any] = {"model": readiness_info(getattr(app.state, "explainer", None))}
    if settings.EXPLAINER_DB_CACHE:
        db = await database_check_async(settings.database_url)
        # the cache is optional: an unreachable database is reported, not fatal
        checks["cache_db"] = {"ok": True} if db["ok"] else {"ok": True, "reachable": False, "error": db["error"]}
    return checks


def create_app(
    settings: ExplainerSettings | None = None, *, reasoner: LLMReasoner | None | bool = True
) -> FastAPI:
    """App factory. ``reasoner``: True = load from settings in the lifespan; None = template-only; or a
    ready reasoner."""
    app = FastAPI(title="recsys explainer", version="1", lifespan=lifespan)
    app.state.settings = settings or get_settings()
    app.state.reasoner = reasoner
    app.include_router(router)
    install_common(app, service="explainer", readiness=partial(readiness, app))
    return app
