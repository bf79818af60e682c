"""Ingest HTTP API: ``POST /v1/reviews`` and ``POST /v1/items`` (one object or a batch).

The body is size-checked (Content-Length, then a running count while streaming) before it is parsed;
records are validated one by one; the valid ones are stored with their outbox events in one
transaction; every rejected record is reported with its index, field and reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from sqlalchemy import text

from services.ingest.config import IngestSettings, get_settings
from services.ingest.service import MODELS, IngestResult, Kind, ingest
from shared.db import get_engine
from shared.http import DomainError, install_common, require_bearer
from shared.kafka import broker_reachable
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay

log = get_logger(__name__)

RECORDS = Counter("recsys_ingest_records_total", "records received by the ingest API", ["kind", "outcome"])


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class BadBody(DomainError):
    status_code = 400
    code = "malformed_body"


class AllRejected(DomainError):
    status_code = 422
    code = "validation_error"


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


def parse_records(body: bytes, *, kind: Kind, max_batch: int) -> tuple[list[Any], bool]:
    """JSON body → (records, is_batch). One object, ``{"<kind>": [...]}`` or a bare list."""
    if not body.strip():
        raise BadBody("request body is empty; send a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = "body is not valid UTF-8" if "utf-8" in str(exc).lower() else "body is not valid JSON"
        raise BadBody(f"{reason}: {exc}") from exc
    if isinstance(doc, dict) and kind in doc and set(doc) == {kind}:
        records, batch = doc[kind], True
        if not isinstance(records, list):
            raise AllRejected(
                f'"{kind}" must be a list of objects',
                details=[
                    {
                        "index": None,
                        "errors": [{"field": kind, "message": "must be a list", "type": "list_type"}],
                    }
                ],
            )
    elif isinstance(doc, list):
        records, batch = doc, True
    elif isinstance(doc, dict):
        records, batch = [doc], False
    else:
        raise AllRejected(f'body must be a JSON object (one record) or {{"{kind}": [...]}}')
    if len(records) > max_batch:
        raise PayloadTooLarge(
            f"{len(records)} records in one request; the limit is {max_batch}", code="batch_too_large"
        )
    return records, batch


def _respond(result: IngestResult, *, kind: Kind, batch: bool) -> JSONResponse:
    RECORDS.labels(kind, "accepted").inc(result.accepted)
    RECORDS.labels(kind, "rejected").inc(len(result.rejected))
    if result.rejected and result.accepted == 0:
        first = result.rejected[0]
        where = f"record {first.index}: " if batch else ""
        more = f" (and {len(result.rejected) - 1} more records)" if len(result.rejected) > 1 else ""
        raise AllRejected(f"{where}{first.summary()}{more}", details=[r.as_dict() for r in result.rejected])
    return JSONResponse(result.as_dict(), status_code=202)


def _body_schema(kind: Kind) -> dict[str, Any]:
    one = MODELS[kind].model_json_schema(ref_template="#/components/schemas/{model}")
    one.pop("$defs", None)
    batch = {"type": "object", "required": [kind], "properties": {kind: {"type": "array", "items": one}}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [one, batch]}}},
        }
    }


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """The ingest service; runs the outbox relay in a background thread unless ``RELAY_ENABLED`` is off."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
        settings.ensure_home()
        get_engine(settings.database_url)
        relay = settings.outbox_relay(name="ingest-relay") if settings.RELAY_ENABLED else None
        app.state.relay = relay
        if relay is not None:
            relay.start()
        log.info("ingest ready", extra={"relay": bool(relay)})
        try:
            yield
        finally:
            if relay is not None:
                await run_in_threadpool(relay.stop)

    app = FastAPI(
        title="recsys ingest",
        version="1",
        lifespan=lifespan,
        description="Write API for Amazon Reviews 2023 reviews and item metadata.",
    )

    async def readiness() -> dict[str, Any]:
        def db_ok() -> dict[str, Any]:
            try:
                with get_engine(settings.database_url).connect() as conn:
                    conn.execute(text("SELECT 1"))
                return {"ok": True}
            except Exception as exc:
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

        db, broker = await asyncio.gather(
            run_in_threadpool(db_ok), run_in_threadpool(broker_reachable, settings, 2.0)
        )
        checks: dict[str, Any] = {"database": db, "broker": {"ok": broker}}
        relay: OutboxRelay | None = getattr(app.state, "relay", None)
        if relay is not None:
            checks["relay"] = {"ok": relay.running, "last_error": relay.last_error}
        return checks

    install_common(app, service="ingest", readiness=readiness)

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        require_bearer(settings.API_KEYS, authorization)

    async def handle(request: Request, kind: Kind) -> JSONResponse:
        body = await read_body(request, limit=settings.INGEST_MAX_BODY_BYTES)
        records, batch = parse_records(body, kind=kind, max_batch=settings.INGEST_MAX_BATCH)
        result = await run_in_threadpool(
            ingest, database_url=settings.database_url, kind=kind, records=records
        )
        return _respond(result, kind=kind, batch=batch)

    @app.post(
        "/v1/reviews",
        status_code=202,
        tags=["ingest"],
        dependencies=[Depends(authorized)],
        openapi_extra=_body_schema("reviews"),
    )
    async def post_reviews(request: Request) -> JSONResponse:
        """Store one review or a batch ``{"reviews": [...]}``; rejected records are listed by index."""
        return await handle(request, "reviews")

    @app.post(
        "/v1/items",
        status_code=202,
        tags=["ingest"],
        dependencies=[Depends(authorized)],
        openapi_extra=_body_schema("items"),
    )
    async def post_items(request: Request) -> JSONResponse:
        """Store one item's metadata or a batch ``{"items": [...]}``; rejected records are listed by index."""
        return await handle(request, "items")

    return app
