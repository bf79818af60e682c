"""ALS HTTP service (port 8004): precomputed recommendations of the live model, model versions, train."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request

from services.als import service
from services.als.config import AlsSettings, get_settings
from services.als.schemas import Kind, ModelInfo, Recommendations, TrainAccepted, TrainRequest
from services.als.service import LiveModels
from shared.amazon import MAX_ID
from shared.db import get_engine
from shared.http import NO_NUL_PATTERN, ReadinessCheck, install_common, require_bearer
from shared.logging import configure_logging


async def get_app_settings(request: Request) -> AlsSettings:
    return request.app.state.settings


async def get_live_models(request: Request) -> LiveModels:
    return request.app.state.live


async def get_training_threads(request: Request) -> list[threading.Thread]:
    return request.app.state.threads


SettingsDep = Annotated[AlsSettings, Depends(get_app_settings)]
LiveModelsDep = Annotated[LiveModels, Depends(get_live_models)]
TrainingThreadsDep = Annotated[list[threading.Thread], Depends(get_training_threads)]

router = APIRouter(prefix="/v1", tags=["als"])


UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=NO_NUL_PATTERN)]


@router.get("/users/{user_id}/recommendations", response_model=Recommendations)
async def recommendations(
    user_id: UserId,
    settings: SettingsDep,
    live_models: LiveModelsDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    kind: Kind | None = None,
) -> Recommendations:
    """Top-k unseen items for a user from the live model (precomputed at training time)."""
    return service.recommendations(settings=settings, live_models=live_models, user_id=user_id, k=k, kind=kind)


@router.get("/models/live", response_model=ModelInfo)
def live_model(settings: SettingsDep, kind: Kind | None = None) -> ModelInfo:
    """The live model version: metrics, hyper-parameters, trained_at."""
    return service.live_model(settings=settings, kind=kind)


@router.get("/models", response_model=list[ModelInfo])
def models(
    settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=200)] = 20, kind: Kind | None = None
) -> list[ModelInfo]:
    """Recent model versions, newest first (live, retired, rejected, failed, training)."""
    return service.recent_models(settings=settings, limit=limit, kind=kind)


# Model versions are PostgreSQL INTEGER keys: a larger number is a 422 at the edge, not an overflow in the DB.
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/models/{version}", response_model=ModelInfo)
def model(settings: SettingsDep, version: Version) -> ModelInfo:
    """One model version."""
    return service.model_version(settings=settings, version=version)


@router.post("/models/train", status_code=202, response_model=TrainAccepted)
def train(
    settings: SettingsDep,
    threads: TrainingThreadsDep,
    body: TrainRequest | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> TrainAccepted:
    """Start a training now (Celery task, or a background thread); 409 while one is running."""
    require_bearer([settings.ADMIN_KEY] if settings.ADMIN_KEY else None, authorization)
    body = body or TrainRequest()
    return service.start_training(settings=settings, implicit=body.implicit, threads=threads)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: AlsSettings = app.state.settings
    configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    app.state.live = LiveModels(settings)
    app.state.threads = []
    get_engine(settings.database_url)
    yield
    for thread in app.state.threads:
        thread.join(timeout=0.1)


def readiness_check(settings: AlsSettings) -> ReadinessCheck:
    """/readyz: the database (blocking checks, so in a worker thread) and the live version."""

    async def readiness() -> dict[str, Any]:
        return await asyncio.to_thread(service.readiness, settings=settings)

    return readiness


def create_app(settings: AlsSettings | None = None) -> FastAPI:
    """The ALS service; ``settings`` for tests, else from the environment."""
    settings = settings or get_settings()
    app = FastAPI(
        title="recsys als",
        version="1",
        lifespan=lifespan,
        description="Spark ALS recommendations: live model, versions, training.",
    )
    app.state.settings = settings
    install_common(app, service="als", readiness=readiness_check(settings))
    app.include_router(router)
    return app
