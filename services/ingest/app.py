"""Ingest HTTP API: ``POST /v1/reviews`` and ``POST /v1/items`` (one object or a batch).

The body is size-checked (Content-Length, then a running count while streaming) before it is parsed;
records are validated one by one; the valid ones are stored with their outbox events in one
transaction; every rejected record is reported with its index, field and reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from services.ingest import service
from services.ingest.config import IngestSettings, get_settings
from services.ingest.schemas import RECORD_MODELS, Kind
from services.ingest.service import BadBody, PayloadTooLarge
from shared.db import database_check, get_engine
from shared.http import ReadinessCheck, install_common, require_bearer
from shared.kafka import BrokerWatch
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay

log = get_logger(__name__)

RECORDS = Counter("recsys_ingest_records_total", "records received by the ingest API", ["kind", "outcome"])


async def get_app_settings(request: Request) -> IngestSettings:
    return request.app.state.settings


SettingsDep = Annotated[IngestSettings, Depends(get_app_settings)]


def authorized(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Writes need ``Authorization: Bearer <key>`` when ``API_KEYS`` is set."""
    require_bearer(settings.API_KEYS, authorization)


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise BadBody("Content-Length is not an integer") from exc
        if size > limit:
            raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:  # chunked uploads (or a lying Content-Length) are cut off while streaming
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _ingest_request(request: Request, *, settings: IngestSettings, kind: Kind) -> JSONResponse:
    body = await read_body(request, limit=settings.INGEST_MAX_BODY_BYTES)
    records, batch = service.parse_records(body=body, kind=kind, max_batch=settings.INGEST_MAX_BATCH)
    result = await run_in_threadpool(
        service.ingest, database_url=settings.database_url, kind=kind, records=records
    )
    RECORDS.labels(kind, "accepted").inc(result.accepted)
    RECORDS.labels(kind, "rejected").inc(len(result.rejected))
    service.require_accepted(result=result, batch=batch)
    return JSONResponse(result.as_dict(), status_code=202)


def _body_schema(kind: Kind) -> dict[str, Any]:
    one = RECORD_MODELS[kind].model_json_schema(ref_template="#/components/schemas/{model}")
    one.pop("$defs", None)
    batch = {"type": "object", "required": [kind], "properties": {kind: {"type": "array", "items": one}}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [one, batch]}}},
        }
    }


router = APIRouter(prefix="/v1", tags=["ingest"], dependencies=[Depends(authorized)])


@router.post("/reviews", status_code=202, openapi_extra=_body_schema("reviews"))
async def post_reviews(request: Request, settings: SettingsDep) -> JSONResponse:
    """Store one review or a batch ``{"reviews": [...]}``; rejected records are listed by index."""
    return await _ingest_request(request, settings=settings, kind="reviews")


@router.post("/items", status_code=202, openapi_extra=_body_schema("items"))
async def post_items(request: Request, settings: SettingsDep) -> JSONResponse:
    """Store one item's metadata or a batch ``{"items": [...]}``; rejected records are listed by index."""
    return await _ingest_request(request, settings=settings, kind="items")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs the outbox relay in a background thread unless ``RELAY_ENABLED`` is off."""
    settings: IngestSettings = app.state.settings
    configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    settings.ensure_home()
    get_engine(settings.database_url)
    relay = settings.outbox_relay(name="ingest-relay") if settings.RELAY_ENABLED else None
    app.state.relay = relay
    if relay is not None:
        relay.start()
    app.state.broker_watch = BrokerWatch(settings, service="ingest").start()
    log.info("ingest ready", extra={"relay": bool(relay)})
    try:
        yield
    finally:
        app.state.broker_watch.stop()
        if relay is not None:
            await run_in_threadpool(relay.stop)


def readiness_check(app: FastAPI) -> ReadinessCheck:
    """/readyz means "can accept writes": the database and the relay thread alive.

    Not the broker: a write goes to the database with its outbox event, and the relay publishes it
    once the broker is back, so a broker outage must not take ingest out of its Service (in
    Kubernetes an unready pod gets no traffic: a broker outage would become a write outage).
    """

    async def readiness() -> dict[str, Any]:
        settings: IngestSettings = app.state.settings
        checks: dict[str, Any] = {"database": await run_in_threadpool(database_check, settings.database_url)}
        relay: OutboxRelay | None = getattr(app.state, "relay", None)
        if relay is not None:
            checks["relay"] = {"ok": relay.running, "last_error": relay.last_error}
        return checks

    return readiness


def health_details(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """/healthz details: the broker (cached probe, also ``recsys_broker_up``) and the relay's last error."""

    def details() -> dict[str, Any]:
        watch: BrokerWatch | None = getattr(app.state, "broker_watch", None)
        out: dict[str, Any] = {"broker": watch.state() if watch is not None else {"ok": None}}
        relay: OutboxRelay | None = getattr(app.state, "relay", None)
        if relay is not None:
            out["relay"] = {"running": relay.running, "last_error": relay.last_error}
        return out

    return details


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """The ingest service; ``settings`` for tests, else from the environment."""
    app = FastAPI(
        title="recsys ingest",
        version="1",
        lifespan=lifespan,
        description="Write API for Amazon Reviews 2023 reviews and item metadata.",
    )
    app.state.settings = settings or get_settings()
    install_common(app, service="ingest", readiness=readiness_check(app), health_details=health_details(app))
    app.include_router(router)
    return app
