"""Gateway HTTP service (port 8000): the public recommendation API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request

from services.gateway.clients import REQUEST_TIMING, ServiceClients, server_timing
from services.gateway.config import GatewaySettings, get_settings
from services.gateway.precompute import follow_llm_writes, read_events
from services.gateway.schemas import GatewayStrategy, ReasonsBackend, RecommendationsResponse
from services.gateway.service import Recommender
from shared import events
from shared.amazon import MAX_ID
from shared.db import database_check_async
from shared.http import NO_NUL_PATTERN, FastJSON, NotFound, install_common, require_bearer
from shared.kafka import EventListener
from shared.logging import configure_logging

DEPENDENCIES = ("retriever", "explainer", "als")

UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=NO_NUL_PATTERN)]


async def _recommender(request: Request) -> Recommender:
    # async: FastAPI would run a plain function in its thread pool, a thread hop on the hot path
    return request.app.state.recommender


RecommenderDep = Annotated[Recommender, Depends(_recommender)]


async def read_authorized(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Personal data (a user's recommendations and profile) needs a read or admin key when keys are
    configured: always in production, in development once ``RECSYS_READ_KEYS`` is set."""
    settings: GatewaySettings = request.app.state.settings
    require_bearer(settings.read_keys, authorization)


recommendations_router = APIRouter(prefix="/v1/users", tags=["recommendations"],
                                   dependencies=[Depends(read_authorized)])
users_router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(read_authorized)])


@recommendations_router.get(
    "/{user_id}/recommendations",
    response_model=RecommendationsResponse,
    responses={200: {"headers": {"X-Cache": {"description": "hit, stale, miss or bypass"}}}},
)
async def recommendations(
    user_id: UserId,
    svc: RecommenderDep,
    k: Annotated[int, Query(ge=1, le=50, description="number of items")] = 5,
    strategy: Annotated[GatewayStrategy, Query()] = "hybrid",
    reasons: Annotated[
        ReasonsBackend | None,
        Query(description="explainer backend; default from RECSYS_GATEWAY_REASONS"),
    ] = None,
    cache_control: Annotated[str | None, Header(max_length=200)] = None,
) -> FastJSON:
    """Top-k items with a reason each; ``degraded`` says a fallback was used, ``source`` which path.

    Answers are cached per gateway replica while the user's profile and reviews are unchanged
    (``RECSYS_GATEWAY_CACHE_TTL_S``; after it, served while recomputed, ``RECSYS_GATEWAY_CACHE_STALE_S``)
    and computed ahead when a profile is written; send ``Cache-Control: no-cache`` to compute a fresh one.
    """
    fresh = "no-cache" in (cache_control or "").lower()
    info: dict[str, str] = {}
    timing: dict[str, float] = {}
    token = REQUEST_TIMING.set(timing)
    started = time.perf_counter()
    try:
        answer = await svc.recommend(
            user_id=user_id, k=k, strategy=strategy, reasons=reasons, use_cache=not fresh, info=info
        )
    finally:
        REQUEST_TIMING.reset(token)
    timing["total"] = time.perf_counter() - started
    # Server-Timing: where the answer's time went (the DB read, each dependency call, the total)
    return FastJSON(answer, headers={"X-Cache": info.get("cache", "bypass"), "Server-Timing": server_timing(timing)})


@users_router.get("/{user_id}/profile")
async def profile(user_id: UserId, svc: RecommenderDep) -> dict[str, Any]:
    """The user's latest profile (status cold_start when there was too little history)."""
    found = await svc.profile(user_id=user_id)
    if found is None:
        raise NotFound(f"no profile for user {user_id!r}", code="profile_not_found")
    return found


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the dependency clients inside the serving event loop; close them on shutdown."""
    settings: GatewaySettings = app.state.settings
    configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    clients = ServiceClients(settings)
    recommender = app.state.recommender = Recommender(settings=settings, clients=clients)
    listener: EventListener | None = None
    follower: asyncio.Task[None] | None = None
    if recommender.precomputer is not None:
        recommender.precomputer.start()
        if settings.GATEWAY_FOLLOW_S > 0:
            follower = asyncio.create_task(follow_llm_writes(
                read=recommender.llm_writes, on_users=recommender.on_llm_writes, every_s=settings.GATEWAY_FOLLOW_S))
        if settings.GATEWAY_PRECOMPUTE:
            loop = asyncio.get_running_loop()

            def on_records(records: Sequence[Any]) -> None:  # the listener's thread
                users, promoted = read_events(records, models_topic=settings.topic(events.MODELS))
                if users or promoted:
                    loop.call_soon_threadsafe(recommender.on_events, users, promoted)

            # this replica's own group (its cache is its own), from the latest offset: a missed event
            # costs one computed answer on that user's next request
            instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            listener = EventListener(settings, topics=[events.PROFILES, events.MODELS],
                                     group_id=f"gateway-precompute-{instance}", handler=on_records,
                                     name="gateway-precompute").start()
    try:
        yield
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        if listener is not None:
            await asyncio.to_thread(listener.stop)
        if recommender.precomputer is not None:
            await recommender.precomputer.stop()
        await clients.aclose()


async def readiness(app: FastAPI) -> dict[str, Any]:
    """DB is required; each dependency is reported (the gateway degrades without them)."""
    settings: GatewaySettings = app.state.settings
    checks: dict[str, Any] = {}
    checks["db"] = await database_check_async(settings.database_url)
    svc: Recommender | None = getattr(app.state, "recommender", None)
    if svc is None:
        checks["app"] = {"ok": False, "error": "not started"}
        return checks
    probes = await asyncio.gather(*(svc.clients.probe(n) for n in DEPENDENCIES))
    for name, probe in zip(DEPENDENCIES, probes, strict=True):
        checks[name] = {"ok": True, "required": False, **probe}
    if svc.precomputer is not None:  # answers waiting to be computed ahead / behind requests, and done
        checks["precompute"] = {"ok": True, "required": False, "waiting": svc.precomputer.waiting(),
                                "done": svc.precomputer.done}
    return checks


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """App factory: settings now, dependency clients in the lifespan."""
    app = FastAPI(title="recsys gateway", version="1", lifespan=lifespan)
    app.state.settings = settings or get_settings()
    app.include_router(recommendations_router)
    app.include_router(users_router)
    install_common(app, service="gateway", readiness=partial(readiness, app))
    return app
