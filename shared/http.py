"""Pieces every FastAPI service shares: health/readiness/metrics routes, auth, error mapping."""
from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.metrics import HttpMetricsMiddleware, metrics_response

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]

# Ids in paths and bodies (user_id, parent_asin): PostgreSQL text cannot hold NUL, so an id with one can
# match nothing and would fail the query; with this pattern it is a 422 at the edge (and in OpenAPI).
NO_NUL_PATTERN = r"^[^\x00]*$"


class FastJSON(Response):
    """JSON via orjson for hot endpoints that build plain dicts of str/int/float/bool/None/list.

    Returning a Response skips FastAPI's response validation and ``jsonable_encoder`` walk; keep the
    endpoint's ``response_model`` (or a typed schema) for the OpenAPI docs, and build the dict so it
    matches, because nothing re-checks it.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class DomainError(Exception):
    """A service-layer error with an HTTP status and a stable machine-readable code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.details = details


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


def install_common(app: FastAPI, *, service: str, readiness: ReadinessCheck | None = None,
                   health_details: Callable[[], dict[str, Any]] | None = None) -> None:
    """Add /healthz, /readyz, /metrics, request metrics and error handlers to a service app.

    ``readiness`` returns ``{"dep": {"ok": bool, ...}, ...}``; /readyz is 503 unless all are ok.
    ``health_details`` (non-blocking, cached state) adds the state of dependencies that do not decide
    readiness to /healthz, e.g. the broker for ingest, whose writes go through the outbox.
    """
    app.add_middleware(HttpMetricsMiddleware, service=service)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Process is alive (and, where a service has them, details that do not decide readiness)."""
        body: dict[str, Any] = {"status": "ok", "service": service}
        if health_details is not None:
            body["details"] = health_details()
        return body

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        """Dependencies reachable and models loaded."""
        checks = await readiness() if readiness else {}
        ok = all(bool(c.get("ok")) for c in checks.values())
        return JSONResponse({"status": "ready" if ok else "not_ready", "service": service, "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Any:
        return metrics_response()

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        body: dict[str, Any] = {"error": {"code": exc.code, "message": exc.message}}
        if exc.details is not None:
            body["error"]["details"] = exc.details
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Routing (404 unknown path, 405 wrong method) and HTTPException (401) answer with the same
        # error body as every other 4xx, keeping their headers (Allow, WWW-Authenticate).
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return JSONResponse({"error": {"code": http_error_code(exc.status_code), "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"error": {"code": "validation_error", "message": "request is invalid",
                                       "details": errors}}, status_code=422)


def http_error_code(status_code: int) -> str:
    """The error code of a plain HTTP error: its reason phrase in snake case (404 -> ``not_found``)."""
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_").replace("'", "")
    except ValueError:
        return f"http_{status_code}"


def require_bearer(keys: list[str] | None, authorization: str | None) -> None:
    """Raise 401 unless ``Authorization: Bearer <key>`` matches one of ``keys`` (no keys = open)."""
    if not keys:
        return
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token: send Authorization: Bearer <key>")
    token = authorization.split(" ", 1)[1].strip()
    if not any(secrets.compare_digest(token.encode(), k.encode()) for k in keys):
        raise Unauthorized("invalid bearer token")
