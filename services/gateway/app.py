"""Gateway HTTP service (port 8000): the public recommendation API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import text

from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings, get_settings
from services.gateway.service import Recommender
from shared.db import get_engine
from shared.http import FastJSON, NotFound, install_common
from shared.logging import configure_logging

UserId = Annotated[str, Path(min_length=1, max_length=128)]


class RecommendedItem(BaseModel):
    parent_asin: str
    title: str
    score: float | None = Field(description="the strategy's own score (not comparable across strategies)")
    average_rating: float | None
    reason: str = Field(description="one short personalized reason or ad line")
    source: Literal["hybrid", "als", "llm_only", "popular"] = Field(description="which path produced it")
    reason_source: Literal["llm", "template"]


class RecommendationsResponse(BaseModel):
    """The answer's shape (documentation: the endpoint serializes its dict directly; tests validate it)."""

    user_id: str
    strategy: Literal["hybrid", "als", "llm_only", "popular"]
    cold_start: bool
    degraded: bool = Field(description="a fallback was used; ``notes`` says which")
    items: list[RecommendedItem]
    notes: list[str] = Field(description="machine-readable fallback notes, e.g. explainer:timeout")


async def _recommender(request: Request) -> Recommender:
    return request.app.state.recommender


RecommenderDep = Annotated[Recommender, Depends(_recommender)]


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """App factory: the lifespan opens the dependency clients (inside the serving event loop)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
        clients = ServiceClients(settings)
        app.state.recommender = Recommender(settings=settings, clients=clients)
        try:
            yield
        finally:
            await clients.aclose()

    app = FastAPI(title="recsys gateway", version="1", lifespan=lifespan)

    @app.get(
        "/v1/users/{user_id}/recommendations",
        tags=["recommendations"],
        response_model=RecommendationsResponse,
        responses={200: {"headers": {"X-Cache": {"description": "hit, miss or bypass"}}}},
    )
    async def recommendations(
        user_id: UserId,
        svc: RecommenderDep,
        k: Annotated[int, Query(ge=1, le=50, description="number of items")] = 5,
        strategy: Annotated[Literal["hybrid", "als", "llm_only", "popular"], Query()] = "hybrid",
        reasons: Annotated[
            Literal["auto", "template", "llm"] | None,
            Query(description="explainer backend; default from RECSYS_GATEWAY_REASONS"),
        ] = None,
        cache_control: Annotated[str | None, Header(max_length=200)] = None,
    ) -> FastJSON:
        """Top-k items with a reason each; ``degraded`` says a fallback was used, ``source`` which path.

        Answers are cached per gateway replica while the user's profile and reviews are unchanged
        (``RECSYS_GATEWAY_CACHE_TTL_S``); send ``Cache-Control: no-cache`` to compute a fresh one.
        """
        fresh = "no-cache" in (cache_control or "").lower()
        info: dict[str, str] = {}
        answer = await svc.recommend(
            user_id=user_id, k=k, strategy=strategy, reasons=reasons, use_cache=not fresh, info=info
        )
        return FastJSON(answer, headers={"X-Cache": info.get("cache", "bypass")})

    @app.get("/v1/users/{user_id}/profile", tags=["users"])
    async def profile(user_id: UserId, svc: RecommenderDep) -> dict[str, Any]:
        """The user's latest profile (status cold_start when there was too little history)."""
        found = await svc.profile(user_id=user_id)
        if found is None:
            raise NotFound(f"no profile for user {user_id!r}", code="profile_not_found")
        return found

    async def readiness() -> dict[str, Any]:
        """DB is required; each dependency is reported (the gateway degrades without them)."""
        checks: dict[str, Any] = {}
        try:
            await asyncio.wait_for(asyncio.to_thread(_ping, settings.database_url), timeout=2.0)
            checks["db"] = {"ok": True}
        except Exception as e:
            checks["db"] = {"ok": False, "error": type(e).__name__}
        svc: Recommender | None = getattr(app.state, "recommender", None)
        if svc is None:
            checks["app"] = {"ok": False, "error": "not started"}
            return checks
        names = ("retriever", "explainer", "als")
        probes = await asyncio.gather(*(svc.clients.probe(n) for n in names))
        for name, probe in zip(names, probes, strict=True):
            checks[name] = {"ok": True, "required": False, **probe}
        return checks

    install_common(app, service="gateway", readiness=readiness)
    return app


def _ping(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))
