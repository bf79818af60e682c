"""Explainer HTTP service (port 8003): ``POST /v1/explanations``, ``POST /v1/rerank``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request

from services.explainer.config import ExplainerSettings, get_settings
from services.explainer.llm import LLMReasoner
from services.explainer.schemas import ExplainRequest, ExplainResponse, RerankRequest, RerankResponse
from services.explainer.service import Explainer, RemoteJobs, load_reasoner, readiness_info
from services.explainer.store import ReasonCache, RerankStore
from shared import events
from shared.db import database_check_async
from shared.http import install_common
from shared.kafka import EventListener
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)


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
    """The llm_only re-rank of the candidates: the one the LLM worker stored for this user, profile and
    catalog version, or at once the retriever order (``rerank: pending``) while it is written;
    ``mode=inline`` runs the LLM in the request (retriever order fills the gaps)."""
    return await svc.rerank(body)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the reasoner (the LLM) once and open the reason cache; stop the LLM thread on shutdown."""
    settings: ExplainerSettings = app.state.settings
    configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    reasoner = app.state.reasoner
    remote = app.state.remote
    template_only = settings.EXPLAINER_BACKEND == "template" or settings.LLM_BACKEND == "template"
    if reasoner is True and settings.EXPLAINER_LLM_WORKER and not template_only:
        # the LLM runs in the explainer worker: this process loads no model
        from services.explainer.tasks import CeleryJobs

        reasoner, remote = None, remote or CeleryJobs(settings)
    elif reasoner is True:
        reasoner = await asyncio.to_thread(partial(load_reasoner, settings=settings))
    db_url = settings.database_url if settings.EXPLAINER_DB_CACHE else None
    miss_ttl = settings.EXPLAINER_MISS_TTL_S if remote is not None else 0.0  # only the worker writes then
    cache = ReasonCache(database_url=db_url, lru_size=settings.EXPLAINER_CACHE_SIZE, miss_ttl_s=miss_ttl)
    reranks = RerankStore(database_url=db_url, lru_size=settings.EXPLAINER_CACHE_SIZE, miss_ttl_s=miss_ttl)
    app.state.explainer = Explainer(settings=settings, reasoner=reasoner or None, cache=cache, reranks=reranks,
                                    remote=remote)
    # profiles.v1 -> precompute; one consumer group for every replica (the reasons go to the shared cache)
    listener = (EventListener(settings, topics=[events.PROFILES], group_id="explainer-reasons",
                              handler=app.state.explainer.handle_profile_events, name="explainer-profiles").start()
                if settings.EXPLAINER_PRECOMPUTE and app.state.explainer.llm_enabled else None)
    follow = (start_following(cache, reranks, every_s=settings.EXPLAINER_FOLLOW_S)
              if remote is not None and db_url and settings.EXPLAINER_FOLLOW_S > 0 else None)
    try:
        yield
    finally:
        if follow is not None:
            follow.set()
        if listener is not None:
            listener.stop()
        app.state.explainer.close()


def start_following(cache: ReasonCache, reranks: RerankStore, *, every_s: float) -> threading.Event:
    """One thread that keeps both caches complete (``TableFollower``); set the event to stop it."""
    stop = threading.Event()
    followers = [cache.follow(stale_s=3 * every_s + 2.0), reranks.follow(stale_s=3 * every_s + 2.0)]

    def run() -> None:
        while not stop.is_set():
            for f in followers:
                try:
                    while f.poll(batch=5_000) >= 5_000:  # a backlog: read on until caught up
                        pass
                except Exception as e:  # the database is away: requests read it themselves meanwhile
                    log.warning("reason cache follow failed", extra={"error": str(e)[:300]})
            stop.wait(every_s)

    threading.Thread(target=run, name="explainer-follow", daemon=True).start()
    return stop


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
    settings: ExplainerSettings | None = None, *, reasoner: LLMReasoner | None | bool = True,
    remote: RemoteJobs | None = None,
) -> FastAPI:
    """App factory. ``reasoner``: True = from settings in the lifespan (with ``EXPLAINER_LLM_WORKER``, the
    explainer worker's queues and no model here; otherwise the model loaded here); None = template-only
    (or only ``remote``); or a ready reasoner that runs in this process. ``remote``: the worker's queues to
    use instead of :class:`services.explainer.tasks.CeleryJobs`."""
    app = FastAPI(title="recsys explainer", version="1", lifespan=lifespan)
    app.state.settings = settings or get_settings()
    app.state.reasoner = reasoner
    app.state.remote = remote
    app.include_router(router)
    install_common(app, service="explainer", readiness=partial(readiness, app))
    return app
