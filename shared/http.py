"""Pieces every FastAPI service shares: health/readiness/metrics routes, auth, error mapping."""
from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from shared.metrics import HttpMetricsMiddleware, metrics_response

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]


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


def install_common(app: FastAPI, *, service: str, readiness: ReadinessCheck | None = None) -> None:
    """Add /healthz, /readyz, /metrics, request metrics and error handlers to a service app.

    ``readiness`` returns ``{"dep": {"ok": bool, ...}, ...}``; /readyz is 503 unless all are ok.
    """
    app.add_middleware(HttpMetricsMiddleware, service=service)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Process is alive."""
        return {"status": "ok", "service": service}

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
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"error": {"code": "validation_error", "message": "request is invalid",
                                       "details": errors}}, status_code=422)


def require_bearer(keys: list[str] | None, authorization: str | None) -> None:
    """Raise 401 unless ``Authorization: Bearer <key>`` matches one of ``keys`` (no keys = open)."""
    if not keys:
        return
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    token = authorization.split(" ", 1)[1].strip()
    if not any(secrets.compare_digest(token, k) for k in keys):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
