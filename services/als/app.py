"""ALS HTTP service (port 8004): precomputed recommendations of the live model, model versions, train."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import text

from services.als import store
from services.als.config import AlsSettings, get_settings
from shared.db import get_engine
from shared.http import DomainError, NotFound, install_common, require_bearer
from shared.logging import configure_logging, get_logger
from shared.models import AlsModel

log = get_logger(__name__)

Kind = Literal["explicit", "implicit"]


class ScoredItem(BaseModel):
    parent_asin: str
    score: float


class Recommendations(BaseModel):
    user_id: str
    model_version: int
    kind: str
    items: list[ScoredItem]


class ModelInfo(BaseModel):
    version: int
    kind: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_users: int
    n_items: int
    n_ratings: int
    error: str | None
    run_id: str | None
    started_at: str | None
    trained_at: str | None


class TrainRequest(BaseModel):
    implicit: bool = Field(False, description="train the implicit-feedback ranking model instead")


class TrainAccepted(BaseModel):
    run_id: str
    status: str = "queued"
    executor: str
    kind: str


def _info(row: AlsModel) -> ModelInfo:
    return ModelInfo(
        version=row.version,
        kind=row.kind,
        status=row.status,
        params=row.params or {},
        metrics=row.metrics or {},
        n_users=row.n_users,
        n_items=row.n_items,
        n_ratings=row.n_ratings,
        error=row.error,
        run_id=row.run_id,
        started_at=row.started_at.isoformat() if row.started_at else None,
        trained_at=row.trained_at.isoformat() if row.trained_at else None,
    )


class LiveModels:
    """The live version per kind, re-read at most every ``ttl_s`` (a promotion shows up within it)."""

    def __init__(self, settings: AlsSettings, ttl_s: float = 2.0) -> None:
        self.settings, self.ttl_s = settings, ttl_s
        self._cache: dict[str, tuple[float, AlsModel | None]] = {}

    def get(self, kind: str) -> AlsModel | None:
        hit = self._cache.get(kind)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        row = store.get_live(self.settings.database_url, kind=kind)
        self._cache[kind] = (time.monotonic(), row)
        return row


async def get_app_settings(request: Request) -> AlsSettings:
    return request.app.state.settings


SettingsDep = Annotated[AlsSettings, Depends(get_app_settings)]
router = APIRouter(prefix="/v1", tags=["als"])


@router.get("/users/{user_id}/recommendations", response_model=Recommendations)
async def recommendations(
    request: Request,
    user_id: str,
    settings: SettingsDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    kind: Kind | None = None,
) -> Recommendations:
    """Top-k unseen items for a user from the live model (precomputed at training time)."""
    kind = kind or settings.ALS_SERVING_KIND  # type: ignore[assignment]
    live = request.app.state.live.get(kind)
    if live is None:
        raise DomainError(f"no live {kind} ALS model yet", code="no_live_model", status_code=503)
    items = store.user_recommendations(settings.database_url, version=live.version, user_id=user_id, k=k)
    if not items:
        raise NotFound(f"user {user_id!r} is not in ALS model v{live.version}", code="user_not_in_model")
    return Recommendations(
        user_id=user_id,
        model_version=live.version,
        kind=live.kind,
        items=[ScoredItem(parent_asin=a, score=s) for a, s in items],
    )


@router.get("/models/live", response_model=ModelInfo)
def live_model(request: Request, settings: SettingsDep, kind: Kind | None = None) -> ModelInfo:
    """The live model version: metrics, hyper-parameters, trained_at."""
    row = store.get_live(settings.database_url, kind=kind or settings.ALS_SERVING_KIND)
    if row is None:
        raise DomainError(f"no live {kind} ALS model yet", code="no_live_model", status_code=503)
    return _info(row)


@router.get("/models", response_model=list[ModelInfo])
def models(
    settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=200)] = 20, kind: Kind | None = None
) -> list[ModelInfo]:
    """Recent model versions, newest first (live, retired, rejected, failed, training)."""
    return [_info(r) for r in store.recent_versions(settings.database_url, limit=limit, kind=kind)]


@router.get("/models/{version}", response_model=ModelInfo)
def model(settings: SettingsDep, version: int) -> ModelInfo:
    """One model version."""
    row = store.get_version(settings.database_url, version)
    if row is None:
        raise NotFound(f"no model version {version}", code="model_not_found")
    return _info(row)


@router.post("/models/train", status_code=202, response_model=TrainAccepted)
def train(
    request: Request,
    settings: SettingsDep,
    body: TrainRequest | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> TrainAccepted:
    """Start a training now (Celery task, or a background thread); 409 while one is running."""
    require_bearer([settings.ADMIN_KEY] if settings.ADMIN_KEY else None, authorization)
    body = body or TrainRequest()
    run_id = uuid.uuid4().hex
    url = settings.database_url
    # Take the lease for this run id now, so a second request gets 409 even before a worker starts.
    if not store.acquire_lease(url, owner=run_id, ttl_s=settings.ALS_LOCK_TTL_S):
        raise DomainError(
            f"a training is already running ({store.lease_holder(url)})",
            code="training_in_progress",
            status_code=409,
        )
    kind = "implicit" if body.implicit else "explicit"
    try:
        if settings.ALS_TRAIN_EXECUTOR == "thread":
            thread = threading.Thread(
                target=_train_in_thread,
                args=(settings, run_id, body.implicit),
                name=f"als-train-{run_id[:8]}",
                daemon=True,
            )
            request.app.state.threads.append(thread)
            thread.start()
        else:
            from services.als.tasks import enqueue_training

            enqueue_training(settings, run_id=run_id, implicit=body.implicit)
    except Exception as exc:
        store.release_lease(url, owner=run_id)
        log.exception("could not start training", extra={"run_id": run_id})
        raise DomainError(
            f"could not start training: {exc}", code="train_unavailable", status_code=503
        ) from exc
    return TrainAccepted(run_id=run_id, executor=settings.ALS_TRAIN_EXECUTOR, kind=kind)


def _train_in_thread(settings: AlsSettings, run_id: str, implicit: bool) -> None:
    from services.als.training import run_training

    try:
        run_training(settings, run_id=run_id, implicit=implicit)
    except Exception:  # run_training records fit failures itself; this is the last resort
        log.exception("training thread crashed", extra={"run_id": run_id})
        store.release_lease(settings.database_url, owner=run_id)


def create_app(settings: AlsSettings | None = None) -> FastAPI:
    """The ALS service; ``settings`` for tests, else from the environment."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
        app.state.settings = settings
        app.state.live = LiveModels(settings)
        app.state.threads = []
        get_engine(settings.database_url)
        yield
        for thread in app.state.threads:
            thread.join(timeout=0.1)

    app = FastAPI(
        title="recsys als",
        version="1",
        lifespan=lifespan,
        description="Spark ALS recommendations: live model, versions, training.",
    )

    async def readiness() -> dict[str, Any]:
        try:
            with get_engine(settings.database_url).connect() as conn:
                conn.execute(text("SELECT 1"))
            db: dict[str, Any] = {"ok": True}
        except Exception as exc:
            db = {"ok": False, "error": str(exc)[:200]}
        live = store.get_live(settings.database_url, kind=settings.ALS_SERVING_KIND) if db["ok"] else None
        # No live model is not "unready": the API answers 503 no_live_model and callers fall back.
        return {"database": db, "live_model": {"ok": True, "version": live.version if live else None}}

    install_common(app, service="als", readiness=readiness)
    app.include_router(router)
    return app
