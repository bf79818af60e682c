"""What each page shows, gathered from the services over HTTP (like any client) and from the dashboard's
read-only store; every call has its own timeout and a failure becomes a "down" panel, never an error page."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from services.dashboard import store
from services.dashboard.charts import bar_chart
from services.dashboard.config import DashboardSettings
from services.dashboard.schemas import SERVICES, STRATEGIES, Panel, TestReviewForm

T = TypeVar("T")


class Dependencies:
    """One pooled HTTP client for every service, plus blocking reads in threads under a timeout."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.urls = {
            "gateway": settings.GATEWAY_URL,
            "ingest": settings.INGEST_URL,
            "retriever": settings.RETRIEVER_URL,
            "explainer": settings.EXPLAINER_URL,
            "als": settings.ALS_URL,
        }
        self.http = httpx.AsyncClient(timeout=settings.DASHBOARD_TIMEOUT_S, follow_redirects=False)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self, service: str) -> dict[str, str]:
        # Ingest takes a write key; the others accept the admin key (gateway reads, retriever/ALS admin).
        key = self.settings.ingest_key if service == "ingest" else self.settings.read_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
        accept: tuple[int, ...] = (),
    ) -> Panel:
        """A JSON call; statuses in ``accept`` count as answers too (e.g. 503 from /readyz)."""
        url = self.urls[service].rstrip("/") + path
        timeout = timeout_s or self.settings.DASHBOARD_TIMEOUT_S
        try:
            r = await self.http.request(
                method, url, params=params, json=json_body, headers=self._headers(service), timeout=timeout
            )
        except httpx.TimeoutException:
            return Panel(ok=False, error=f"{service}: no answer within {timeout:g} s")
        except httpx.HTTPError as e:
            return Panel(ok=False, error=f"{service}: unreachable ({type(e).__name__})")
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.is_success or r.status_code in accept:
            return Panel(ok=True, data=body, status=r.status_code)
        err = body.get("error") if isinstance(body, dict) else None
        code = str(err.get("code", "")) if isinstance(err, dict) else ""
        return Panel(ok=False, data=body, status=r.status_code, code=code,
                     error=f"{service}: {_error_text(r.status_code, body)}")

    async def blocking(self, what: str, fn: Callable[..., T], *args: Any, limit_s: float, **kwargs: Any) -> Panel:
        """``fn`` in a worker thread; its exception or a timeout becomes a down panel."""
        try:
            data = await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), timeout=limit_s)
        except TimeoutError:
            return Panel(ok=False, error=f"{what}: no answer within {limit_s:g} s")
        except Exception as e:  # any failure of a dependency is shown, never raised into the page
            return Panel(ok=False, error=f"{what}: {type(e).__name__}: {str(e)[:200]}")
        return Panel(ok=True, data=data, status=200)


def _error_text(status: int, body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else None
        if err:
            return f"HTTP {status} {err.get('code', '')}: {err.get('message', '')}".strip()
        if "detail" in body:
            return f"HTTP {status}: {str(body['detail'])[:200]}"
    return f"HTTP {status}"


def _path(value: str) -> str:
    return quote(value, safe="")


# ---- overview ------------------------------------------------------------------------------------


async def service_health(deps: Dependencies, name: str) -> dict[str, Any]:
    health, ready = await asyncio.gather(
        deps.call(name, "GET", "/healthz"), deps.call(name, "GET", "/readyz", accept=(503,))
    )
    checks = (ready.data or {}).get("checks", {}) if ready.ok and isinstance(ready.data, dict) else {}
    failing = sorted(k for k, v in checks.items() if isinstance(v, dict) and not v.get("ok"))
    return {
        "name": name,
        "url": deps.urls[name],
        "healthy": health.ok,
        "ready": ready.ok and ready.status == 200,
        "failing": failing,
        "error": health.error or ready.error,
        "checks": checks,
    }


async def overview(*, deps: Dependencies) -> dict[str, Any]:
    s = deps.settings
    db = s.database_url
    health_task = asyncio.ensure_future(asyncio.gather(*(service_health(deps, n) for n in SERVICES)))
    topics, queue, outbox, rate, als_live, als_implicit, ranker = await asyncio.gather(
        deps.blocking("broker", store.broker_topics, s, timeout_s=s.DASHBOARD_TIMEOUT_S,
                      limit_s=s.DASHBOARD_BROKER_TIMEOUT_S),
        deps.blocking("celery broker", store.queue_length, s, queue=s.DASHBOARD_PROFILER_QUEUE,
                      timeout_s=s.DASHBOARD_TIMEOUT_S, limit_s=s.DASHBOARD_TIMEOUT_S),
        deps.blocking("database", store.outbox_backlog, db, limit_s=s.DASHBOARD_TIMEOUT_S),
        deps.blocking("database", store.reviews_per_minute, db, minutes=s.DASHBOARD_RATE_WINDOW_MIN,
                      limit_s=s.DASHBOARD_TIMEOUT_S),
        deps.call("als", "GET", "/v1/models/live", params={"kind": "explicit"}),
        deps.call("als", "GET", "/v1/models/live", params={"kind": "implicit"}),
        deps.call("retriever", "GET", "/v1/ranker"),
    )
    health = await health_task
    by_name = {h["name"]: h for h in health}
    index = by_name["retriever"]["checks"].get("index") if by_name["retriever"]["checks"] else None
    chart = ""
    if rate.ok:
        counts = [r["count"] for r in rate.data]
        labels = [r["minute"] for r in rate.data]
        chart = bar_chart(counts, labels, title="reviews ingested per minute (UTC)",
                          label_every=max(1, len(counts) // 6))
    return {
        "services": health,
        "topics": topics,
        "queue": queue,
        "outbox": outbox,
        "rate": rate,
        "rate_total": sum(r["count"] for r in rate.data) if rate.ok else 0,
        "rate_chart": chart,
        "als": als_live,
        "als_implicit": als_implicit,
        "ranker": ranker,
        "index": index,
    }


# ---- user ----------------------------------------------------------------------------------------


async def user_page(*, deps: Dependencies, user_id: str) -> dict[str, Any]:
    """History (database) and profile (gateway); ``known`` is False only when both say "never seen"."""
    s = deps.settings
    history, profile = await asyncio.gather(
        deps.blocking("database", store.user_history, s.database_url, user_id=user_id,
                      limit=s.DASHBOARD_HISTORY_LIMIT, limit_s=s.DASHBOARD_TIMEOUT_S),
        deps.call("gateway", "GET", f"/v1/users/{_path(user_id)}/profile"),
    )
    unknown = history.ok and history.data["total"] == 0 and profile.not_found
    return {"user_id": user_id, "history": history, "profile": profile, "known": not unknown,
            "strategies": STRATEGIES, "k": s.DASHBOARD_K}


async def strategy(*, deps: Dependencies, user_id: str, strategy: str, k: int | None = None) -> Panel:
    s = deps.settings
    t0 = time.monotonic()
    panel = await deps.call(
        "gateway", "GET", f"/v1/users/{_path(user_id)}/recommendations",
        params={"k": k or s.DASHBOARD_K, "strategy": strategy}, timeout_s=s.DASHBOARD_RECS_TIMEOUT_S,
    )
    if panel.ok and isinstance(panel.data, dict):
        panel.data["seconds"] = round(time.monotonic() - t0, 2)
    return panel


async def post_test_review(*, deps: Dependencies, user_id: str, form: TestReviewForm) -> Panel:
    """Post a review by this user through the ingest API (default item: their current top hybrid item)."""
    asin = form.parent_asin
    if not asin:
        top = await strategy(deps=deps, user_id=user_id, strategy="hybrid", k=1)
        items = (top.data or {}).get("items") if top.ok else None
        if not items:
            return Panel(ok=False, status=top.status, error=top.error or "no hybrid item to review")
        asin = items[0]["parent_asin"]
    review = {
        "user_id": user_id,
        "parent_asin": asin,
        "rating": form.rating,
        "title": "Dashboard test review",
        "text": form.text,
        "timestamp": int(time.time() * 1000),
    }
    panel = await deps.call("ingest", "POST", "/v1/reviews", json_body=review,
                            timeout_s=deps.settings.DASHBOARD_INGEST_TIMEOUT_S)
    if panel.ok:
        panel.data = {"review": review, "ingest": panel.data}
    return panel


# ---- item ----------------------------------------------------------------------------------------


async def item_page(*, deps: Dependencies, parent_asin: str) -> dict[str, Any]:
    s = deps.settings
    p = _path(parent_asin)
    details, coreview, retriever_item, similar = await asyncio.gather(
        deps.blocking("database", store.item_details, s.database_url, parent_asin=parent_asin,
                      limit_s=s.DASHBOARD_TIMEOUT_S),
        deps.blocking("database", store.coreview_neighbours, s.database_url, parent_asin=parent_asin,
                      k=s.DASHBOARD_NEIGHBOURS, limit_s=s.DASHBOARD_TIMEOUT_S),
        deps.call("retriever", "GET", f"/v1/items/{p}"),
        deps.call("retriever", "GET", f"/v1/items/{p}/similar", params={"k": s.DASHBOARD_NEIGHBOURS}),
    )
    db_unknown = details.ok and details.data is None
    unknown = db_unknown and (retriever_item.not_found or retriever_item.down)
    return {"parent_asin": parent_asin, "details": details, "coreview": coreview,
            "retriever": retriever_item, "similar": similar, "known": not unknown}


# ---- evaluation ----------------------------------------------------------------------------------

EVAL_DEPTH = 3  # RECSYS_HOME/metrics.json .. RECSYS_HOME/a/b/metrics.json


def find_reports(root: Path, *, depth: int = EVAL_DEPTH) -> list[Path]:
    """Directories under ``root`` holding a ``recsys evaluate`` metrics.json, newest first."""
    found: list[tuple[float, Path]] = []
    patterns = ["metrics.json"] + ["/".join(["*"] * d + ["metrics.json"]) for d in range(1, depth)]
    seen: set[Path] = set()
    for pattern in patterns:
        for path in root.glob(pattern):
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            try:
                head = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(head, dict) and "strategies" in head and "schema_version" in head:
                found.append((path.stat().st_mtime, path.parent))
    return [p for _, p in sorted(found, key=lambda t: t[0], reverse=True)]


def load_report(directory: Path) -> dict[str, Any]:
    """metrics.json as tables (one per user group), the charts beside it and report.md's text."""
    payload = json.loads((directory / "metrics.json").read_text())
    k = payload.get("k")
    strategies: dict[str, Any] = payload.get("strategies") or {}
    groups = []
    for group in ("overall", "warm", "cold"):
        columns: list[str] = []
        for block in strategies.values():
            for key in (block.get(group) or {}):
                if key not in columns:
                    columns.append(key)
        rows = [(name, [(block.get(group) or {}).get(c) for c in columns]) for name, block in strategies.items()]
        groups.append({"name": group, "columns": columns, "rows": rows})
    ndcg_key = f"ndcg@{k}"
    ndcg: list[tuple[str, float]] = []
    for name, block in strategies.items():
        value = (block.get("overall") or {}).get(ndcg_key)
        if isinstance(value, int | float):
            ndcg.append((name, float(value)))
    chart = bar_chart([v for _, v in ndcg], [n for n, _ in ndcg], title=f"{ndcg_key} per strategy", width=520,
                      value_format="{:.3f}") if ndcg else ""
    report_md = directory / "report.md"
    return {
        "directory": str(directory),
        "payload": payload,
        "groups": groups,
        "ndcg_chart": chart,
        "images": sorted(p.name for p in directory.glob("*.png")),
        "report_md": report_md.read_text(errors="replace") if report_md.is_file() else "",
        "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((directory / "metrics.json").stat().st_mtime)),
    }
