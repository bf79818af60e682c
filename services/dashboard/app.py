"""Dashboard HTTP service (port 8005): server-rendered pages over the other services, for operators.

Pages: overview (``/``), user (``/users/{user_id}``), item (``/items/{parent_asin}``) and evaluation
(``/evaluation``). Every asset is served from here (``/static``); nothing comes from a CDN. With any key
configured (``RECSYS_ADMIN_KEY`` / ``RECSYS_API_KEYS``) every page needs the admin key, as a bearer
token or as the password of HTTP Basic auth (what a browser prompts for); health, readiness and
metrics stay open for probes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.dashboard import service
from services.dashboard.config import DashboardSettings, get_settings
from services.dashboard.schemas import STRATEGIES, TestReviewForm, check_id
from services.dashboard.service import Dependencies
from shared.db import database_check_async
from shared.http import install_common
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
REALM = "recsys dashboard"


class PageError(Exception):
    """Render the error page with this status and message (bad input, unknown ids, auth)."""

    def __init__(self, status: int, title: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.headers = status, title, message, headers


async def get_deps(request: Request) -> Dependencies:
    return request.app.state.deps


async def get_app_settings(request: Request) -> DashboardSettings:
    return request.app.state.settings


DepsDep = Annotated[Dependencies, Depends(get_deps)]
SettingsDep = Annotated[DashboardSettings, Depends(get_app_settings)]


async def require_admin(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Open without keys (the embedded demo); else the admin key as Bearer token or Basic password."""
    if not settings.auth_required:
        return
    if not settings.ADMIN_KEY:
        raise PageError(403, "Dashboard locked", "API keys are configured but RECSYS_ADMIN_KEY is not: the "
                        "dashboard opens only with the admin key.")
    offered = _offered_key(authorization or "")
    if offered is None or not secrets.compare_digest(offered.encode(), settings.ADMIN_KEY.encode()):
        raise PageError(401, "Admin key required", "Sign in with the admin key (any user name, the key as "
                        "password) or send it as a bearer token.",
                        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})


def _offered_key(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def _valid(value: str, what: str) -> str:
    reason = check_id(value)
    if reason:
        shown = value if len(value) <= 60 else value[:60] + "…"
        raise PageError(400, f"Not a valid {what}", f"{reason} (got {shown!r}).")
    return value


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, template, {"nav": template.split(".")[0], **context},
                                      status_code=status_code)


pages = APIRouter(dependencies=[Depends(require_admin)], default_response_class=HTMLResponse)


@pages.get("/")
async def overview_page(request: Request, deps: DepsDep) -> HTMLResponse:
    """Health and readiness of every service, topics and lag, queues, models, index, ingest rate."""
    return render(request, "overview.html", data=await service.overview(deps=deps))


@pages.get("/users")
async def user_search(user_id: Annotated[str, Query(max_length=10_000)] = "") -> Response:
    """The search box: redirect to the user's page."""
    user_id = _valid(user_id.strip(), "user id")
    return RedirectResponse(f"/users/{quote(user_id, safe='')}", status_code=303)


@pages.get("/users/{user_id}")
async def user_page(request: Request, user_id: str, deps: DepsDep,
                    posted: Annotated[str | None, Query(max_length=200)] = None) -> HTMLResponse:
    """History, stored profile and the four strategies side by side (loaded after the page)."""
    _valid(user_id, "user id")
    data = await service.user_page(deps=deps, user_id=user_id)
    if not data["known"]:
        raise PageError(404, "Unknown user", f"No reviews and no profile for user {user_id!r}. Check the id, "
                        "or ingest a review for this user first.")
    return render(request, "user.html", data=data, posted=posted)


@pages.get("/users/{user_id}/strategies/{strategy}")
async def strategy_fragment(request: Request, user_id: str, strategy: str, deps: DepsDep) -> HTMLResponse:
    """One strategy's list as an HTML fragment (the user page fetches one per strategy)."""
    _valid(user_id, "user id")
    if strategy not in STRATEGIES:
        raise PageError(404, "Unknown strategy", f"Choose one of {', '.join(STRATEGIES)}.")
    panel = await service.strategy(deps=deps, user_id=user_id, strategy=strategy)
    return render(request, "_strategy.html", strategy=strategy, panel=panel)


@pages.get("/users/{user_id:path}")  # anything else under /users/ (an id with an encoded "/"...)
async def user_fallback(user_id: str) -> HTMLResponse:
    _valid(user_id, "user id")
    raise PageError(404, "Page not found", f"There is no page {user_id!r} under /users/.")


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


@pages.post("/users/{user_id}/test-review")
async def test_review(
    request: Request,
    user_id: str,
    deps: DepsDep,
    parent_asin: Annotated[str, Form(max_length=10_000)] = "",
    rating: Annotated[str, Form(max_length=20)] = "5",
) -> Response:
    """Post a test review by this user through the ingest API; the page then reloads the lists."""
    _valid(user_id, "user id")
    if not _same_origin(request):
        raise PageError(403, "Cross-site request refused", "The test review can only be posted from the dashboard.")
    if parent_asin:
        _valid(parent_asin, "parent_asin")
    try:
        form = TestReviewForm(parent_asin=parent_asin or None, rating=rating)
    except ValidationError as e:
        raise PageError(422, "Invalid test review", "; ".join(err["msg"] for err in e.errors())) from e
    panel = await service.post_test_review(deps=deps, user_id=user_id, form=form)
    fragment = request.headers.get("x-requested-with") == "fetch"
    if fragment:
        return render(request, "_posted.html", status_code=200 if panel.ok else 502, panel=panel)
    if not panel.ok:
        raise PageError(502, "Test review not posted", panel.error)
    asin = panel.data["review"]["parent_asin"]
    return RedirectResponse(f"/users/{quote(user_id, safe='')}?posted={quote(asin, safe='')}", status_code=303)


@pages.get("/items")
async def item_search(parent_asin: Annotated[str, Query(max_length=10_000)] = "") -> Response:
    parent_asin = _valid(parent_asin.strip(), "parent_asin")
    return RedirectResponse(f"/items/{quote(parent_asin, safe='')}", status_code=303)


@pages.get("/items/{parent_asin:path}")  # :path: an id with an encoded "/" gets the 400 page, not a 404
async def item_page(request: Request, parent_asin: str, deps: DepsDep) -> HTMLResponse:
    """Metadata, ratings, co-review neighbours (database) and content neighbours (retriever)."""
    _valid(parent_asin, "parent_asin")
    data = await service.item_page(deps=deps, parent_asin=parent_asin)
    if not data["known"]:
        raise PageError(404, "Unknown item", f"No item {parent_asin!r} in the catalogue and no review of it.")
    return render(request, "item.html", data=data)


@pages.get("/evaluation")
async def evaluation_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The newest `recsys evaluate` output under RECSYS_HOME (or RECSYS_DASHBOARD_EVAL_DIR)."""
    root = settings.eval_dir
    reports = service.find_reports(root)
    report = None
    error = ""
    if reports:
        try:
            report = service.load_report(reports[0])
        except (OSError, ValueError, TypeError, AttributeError) as e:
            error = f"{reports[0]}/metrics.json could not be read: {type(e).__name__}: {e}"
    return render(request, "evaluation.html", report=report, root=str(root), error=error, n_reports=len(reports))


@pages.get("/evaluation/files/{name}")
async def evaluation_file(name: str, settings: SettingsDep) -> FileResponse:
    """A chart of the newest report (PNG files directly in its directory only)."""
    reports = service.find_reports(settings.eval_dir)
    if not reports or "/" in name or not name.endswith(".png") or check_id(name):
        raise PageError(404, "No such chart", f"{name!r} is not a chart of the latest evaluation report.")
    path = reports[0] / name
    if not path.is_file():
        raise PageError(404, "No such chart", f"{name!r} is not a chart of the latest evaluation report.")
    return FileResponse(path, media_type="image/png")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: DashboardSettings = app.state.settings
    configure_logging(level=settings.LOG_LEVEL, json_lines=settings.LOG_JSON)
    app.state.deps = Dependencies(settings)
    try:
        yield
    finally:
        await app.state.deps.aclose()


async def readiness(app: FastAPI) -> dict[str, Any]:
    """The dashboard itself is ready once started; the database is reported, not required (its panels
    show "down" without it)."""
    settings: DashboardSettings = app.state.settings
    db = await database_check_async(settings.database_url)
    return {
        "app": {"ok": getattr(app.state, "deps", None) is not None},
        "db": {**db, "ok": True, "required": False, "reachable": bool(db.get("ok"))},
    }


def _install_error_pages(app: FastAPI) -> None:
    """Every error is an HTML page with a message; never a traceback."""

    def page(request: Request, status: int, title: str, message: str,
             headers: dict[str, str] | None = None) -> HTMLResponse:
        response = render(request, "error.html", status_code=status, title=title, message=message, status=status)
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> HTMLResponse:
        return page(request, exc.status, exc.title, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in exc.errors())
        return page(request, 422, "Invalid request", details or "the request is invalid")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        title = "Page not found" if exc.status_code == 404 else f"HTTP {exc.status_code}"
        return page(request, exc.status_code, title, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("dashboard page failed", extra={"path": request.url.path})
        return page(request, 500, "Something went wrong", "This page failed to render; the error is in the "
                    "dashboard's log.")


def create_app(settings: DashboardSettings | None = None) -> FastAPI:
    """App factory: settings now, the HTTP client in the lifespan."""
    app = FastAPI(title="recsys dashboard", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings or get_settings()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(pages)
    install_common(app, service="dashboard", readiness=lambda: readiness(app))
    _install_error_pages(app)
    return app
