"""Explainer HTTP service (port 8003): ``POST /v1/explanations``, ``POST /v1/rerank``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from sqlalchemy import text

from services.explainer.cache import ReasonCache
from services.explainer.config import ExplainerSettings, get_settings
from services.explainer.llm import LLMReasoner
from services.explainer.schemas import ExplainRequest, ExplainResponse, RerankRequest, RerankResponse
from services.explainer.service import Explainer, readiness_info
from shared.db import get_engine
from shared.http import install_common
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)


def load_reasoner(settings: ExplainerSettings) -> LLMReasoner | None:
    """The LLM reasoner, or None when this deployment is configured template-only.

    A configured LLM that cannot be loaded raises (shared.llm.LLMUnavailable): start-up fails loudly.
    """
    if settings.EXPLAINER_BACKEND == "template" or settings.LLM_BACKEND == "template":
        log.info("explainer is template-only (configured)")
        return None
    from shared.llm import get_llm

    llm = get_llm(settings)
    log.info("explainer LLM loaded", extra={"model": getattr(llm, "name", "?")})
    return LLMReasoner(
        llm,
        batch=settings.EXPLAINER_LLM_BATCH,
        max_new_tokens=settings.EXPLAINER_MAX_NEW_TOKENS,
        max_chars=settings.EXPLAINER_MAX_REASON_CHARS,
        max_ungrounded=settings.EXPLAINER_MAX_UNGROUNDED,
    )


async def _explainer(request: Request) -> Explainer:
    return request.app.state.explainer


ExplainerDep = Annotated[Explainer, Depends(_explainer)]


def create_app(
    settings: ExplainerSettings | None = None, *, reasoner: LLMReasoner | None | bool = True
) -> FastAPI:
    """App factory. ``reasoner``: True = load from settings; None = template-only; or a ready reasoner."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
        loaded = await asyncio.to_thread(load_reasoner, settings) if reasoner is True else reasoner
        db_url = settings.database_url if settings.EXPLAINER_DB_CACHE else None
        cache = ReasonCache(database_url=db_url, lru_size=settings.EXPLAINER_CACHE_SIZE)
        app.state.explainer = Explainer(settings=settings, reasoner=loaded or None, cache=cache)
        try:
            yield
        finally:
            app.state.explainer.close()

    app = FastAPI(title="recsys explainer", version="1", lifespan=lifespan)

    @app.post("/v1/explanations", response_model=ExplainResponse, tags=["explanations"])
    async def explanations(body: ExplainRequest, svc: ExplainerDep) -> ExplainResponse:
        """One short grounded reason per item, distinct across the list."""
        return await svc.explain(body)

    @app.post("/v1/rerank", response_model=RerankResponse, tags=["explanations"])
    async def rerank(body: RerankRequest, svc: ExplainerDep) -> RerankResponse:
        """LLM re-rank of candidates for the llm_only strategy (retriever order fills the gaps)."""
        return await svc.rerank(body)

    async def readiness() -> dict[str, Any]:
        checks: dict[str, Any] = {"model": readiness_info(getattr(app.state, "explainer", None))}
        if settings.EXPLAINER_DB_CACHE:
            try:
                await asyncio.wait_for(asyncio.to_thread(_ping, settings.database_url), timeout=2.0)
                checks["cache_db"] = {"ok": True}
            except Exception as e:  # the cache is optional: reported, not fatal
                checks["cache_db"] = {"ok": True, "reachable": False, "error": type(e).__name__}
        return checks

    install_common(app, service="explainer", readiness=readiness)
    return app


def _ping(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))
