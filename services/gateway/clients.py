"""HTTP clients for the gateway's dependencies: one pooled httpx.AsyncClient each, per-call timeouts.

Every failure (connect error, timeout, non-2xx, invalid JSON) becomes a :class:`DependencyError` with
the dependency's name, a short kind and, when the dependency answered, its status and error code, so
the service layer decides on a fallback without knowing httpx.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client import Histogram

from services.gateway.config import GatewaySettings
from shared.metrics import LATENCY_BUCKETS

DEPENDENCY_LATENCY = Histogram(
    "recsys_gateway_dependency_seconds",
    "Latency of calls to each dependency",
    ["dependency", "call", "outcome"],
    buckets=LATENCY_BUCKETS,
)


class DependencyError(Exception):
    def __init__(
        self,
        dependency: str,
        kind: str,
        *,
        status: int | None = None,
        code: str | None = None,
        message: str = "",
    ) -> None:
        super().__init__(
            f"{dependency}: {kind}"
            + (f" {status} {code or ''}" if status else "")
            + (f" ({message})" if message else "")
        )
        self.dependency = dependency
        self.kind = kind  # timeout | unreachable | http | invalid
        self.status = status
        self.code = code


class ServiceClients:
    """Clients for retriever, ALS and explainer (``transports`` lets tests route calls in-process)."""

    def __init__(
        self, settings: GatewaySettings, *, transports: dict[str, httpx.AsyncBaseTransport] | None = None
    ):
        self.settings = settings
        limits = httpx.Limits(
            max_connections=settings.GATEWAY_MAX_CONNECTIONS,
            max_keepalive_connections=settings.GATEWAY_MAX_CONNECTIONS,
        )
        urls = {
            "retriever": settings.RETRIEVER_URL,
            "als": settings.ALS_URL,
            "explainer": settings.EXPLAINER_URL,
        }
        transports = transports or {}
        self.http: dict[str, httpx.AsyncClient] = {
            name: httpx.AsyncClient(
                base_url=url,
                limits=limits,
                transport=transports.get(name),
                timeout=httpx.Timeout(5.0, connect=settings.GATEWAY_CONNECT_TIMEOUT_S),
            )
            for name, url in urls.items()
        }

    async def aclose(self) -> None:
        for client in self.http.values():
            await client.aclose()

    async def _call(
        self,
        dependency: str,
        call: str,
        method: str,
        path: str,
        *,
        timeout: float,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        start = time.perf_counter()
        outcome = "ok"
        try:
            t = httpx.Timeout(timeout, connect=min(timeout, self.settings.GATEWAY_CONNECT_TIMEOUT_S))
            resp = await self.http[dependency].request(method, path, json=json, params=params, timeout=t)
            if resp.status_code >= 400:
                outcome = f"http_{resp.status_code}"
                code = None
                try:
                    code = resp.json().get("error", {}).get("code")
                except (ValueError, AttributeError):
                    pass
                raise DependencyError(
                    dependency, "http", status=resp.status_code, code=code, message=resp.text[:200]
                )
            try:
                return resp.json()
            except ValueError as e:
                outcome = "invalid"
                raise DependencyError(dependency, "invalid", message="response is not JSON") from e
        except httpx.TimeoutException as e:
            outcome = "timeout"
            raise DependencyError(dependency, "timeout", message=type(e).__name__) from e
        except httpx.HTTPError as e:
            outcome = "unreachable"
            raise DependencyError(dependency, "unreachable", message=type(e).__name__) from e
        finally:
            DEPENDENCY_LATENCY.labels(dependency, call, outcome).observe(time.perf_counter() - start)

    async def candidates(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "retriever",
            "candidates",
            "POST",
            "/v1/candidates",
            json=body,
            timeout=self.settings.GATEWAY_RETRIEVER_TIMEOUT_S,
        )

    async def als_recommendations(self, user_id: str, k: int) -> dict[str, Any]:
        return await self._call(
            "als",
            "recommendations",
            "GET",
            f"/v1/users/{httpx_quote(user_id)}/recommendations",
            params={"k": k},
            timeout=self.settings.GATEWAY_ALS_TIMEOUT_S,
        )

    async def explain(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "explainer",
            "explanations",
            "POST",
            "/v1/explanations",
            json=body,
            timeout=self.settings.GATEWAY_EXPLAINER_TIMEOUT_S,
        )

    async def rerank(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "explainer",
            "rerank",
            "POST",
            "/v1/rerank",
            json=body,
            timeout=self.settings.GATEWAY_RERANK_TIMEOUT_S,
        )

    async def probe(self, dependency: str) -> dict[str, Any]:
        """Reachability of one dependency (its /readyz), for the gateway's own /readyz."""
        try:
            body = await self._call(dependency, "readyz", "GET", "/readyz", timeout=1.0)
            return {"reachable": True, "ready": True, "status": body.get("status")}
        except DependencyError as e:
            return {"reachable": e.kind == "http", "ready": False, "error": str(e)[:200]}


def httpx_quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")
