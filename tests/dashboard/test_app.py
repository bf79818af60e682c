"""The dashboard's pages over real dependencies: the session's PostgreSQL, broker and Redis, a real
gateway and explainer on free ports, and the other services down (URLs where nothing listens). Pages
still render, down dependencies say "down", bad ids get a 4xx page with a message, keys lock it."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.dashboard.app import create_app
from services.dashboard.charts import bar_chart
from services.dashboard.config import DashboardSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.config import GatewaySettings
from shared.broker import free_port
from shared.config import CommonSettings
from shared.db import session_scope
from shared.models import OutboxEvent, Review
from tests.utils.gateway import Seeded
from tests.utils.servers import Running, dead_url, start_app
from tests.utils.settings import service_settings

RECSYS = str(Path(sys.executable).parent / "recsys")


@pytest.fixture(scope="module")
def gateway_server(gateway_settings: GatewaySettings) -> Iterator[Running]:
    running = start_app(create_gateway(gateway_settings))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-eval")


@pytest.fixture(scope="module")
def dash_settings(
    settings: CommonSettings, gateway_server: Running, explainer_server: Running, eval_dir: Path
) -> DashboardSettings:
    return service_settings(
        DashboardSettings, settings,
        GATEWAY_URL=gateway_server.url, EXPLAINER_URL=explainer_server.url,
        INGEST_URL=dead_url(), RETRIEVER_URL=dead_url(), ALS_URL=dead_url(),
        DASHBOARD_TIMEOUT_S=2.0, DASHBOARD_RECS_TIMEOUT_S=20.0, DASHBOARD_EVAL_DIR=eval_dir,
    )


@pytest.fixture(scope="module")
def client(dash_settings: DashboardSettings) -> Iterator[TestClient]:
    with TestClient(create_app(dash_settings)) as c:
        yield c


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text


def _state(html: str, service: str) -> str:
    m = re.search(rf'data-service="{service}" data-state="(\w+)"', html)
    assert m, service
    return m.group(1)


# ---- overview ------------------------------------------------------------------------------------


def test_overview_shows_up_and_down_services_and_the_pipeline(
    client: TestClient, dash_settings: DashboardSettings, seeded: Seeded
) -> None:
    r = client.get("/")
    assert r.status_code == 200
    html = r.text
    assert _state(html, "gateway") == "up" and _state(html, "explainer") == "up"
    for down in ("ingest", "retriever", "als"):
        assert _state(html, down) == "down", down
    assert "ALS service: als: unreachable" in html and "retriever: unreachable" in html
    with session_scope(dash_settings.database_url) as s:
        pending = s.execute(select(func.count()).where(OutboxEvent.published_at.is_(None))).scalar_one()
    assert f"<strong>{pending}</strong> events not yet published" in html
    assert re.search(r'id="profiler-queue"><strong>\d+</strong> jobs waiting in <code>profiler</code> \(redis\)', html)
    # The seeded reviews were stored just now: the per-minute chart counts them.
    total = int(re.search(r'id="rate-total">(\d+)<', html).group(1))  # type: ignore[union-attr]
    assert total >= len(seeded.history)
    assert html.count('<rect class="bar"') == dash_settings.DASHBOARD_RATE_WINDOW_MIN
    assert 'id="topics"' in html and "broker:" not in html  # the session broker answered
    _no_traceback(html)


def test_every_dependency_down_still_renders_the_overview(dash_settings: DashboardSettings) -> None:
    dead = dash_settings.model_copy(update={
        "GATEWAY_URL": dead_url(), "EXPLAINER_URL": dead_url(),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DASHBOARD_TIMEOUT_S": 1.0, "DASHBOARD_BROKER_TIMEOUT_S": 2.0,
    })
    with TestClient(create_app(dead)) as c:
        t0 = time.monotonic()
        r = c.get("/")
        elapsed = time.monotonic() - t0
    assert r.status_code == 200 and elapsed < 10, elapsed
    for name in ("gateway", "ingest", "retriever", "explainer", "als"):
        assert _state(r.text, name) == "down", name
    for what in ("broker", "database", "Celery broker", "ALS service"):
        assert f'<span class="badge bad">down</span> {what}:' in r.text, what
    _no_traceback(r.text)


# ---- user ----------------------------------------------------------------------------------------


def test_user_page_shows_history_and_profile(client: TestClient, seeded: Seeded) -> None:
    r = client.get(f"/users/{seeded.warm_user}")
    assert r.status_code == 200
    assert "Soft Wig Model 0" in r.text and "soft and comfortable" in r.text  # history with titles, snippets
    assert 'class="profile-version">2<' in r.text and 'class="profile-source">llm<' in r.text
    assert "They value softness." in r.text and "soft cotton" in r.text
    for s in ("hybrid", "als", "llm_only", "popular"):
        assert f'data-src="/users/{seeded.warm_user}/strategies/{s}"' in r.text


def test_strategy_fragment_lists_the_gateways_items(client: TestClient, seeded: Seeded) -> None:
    r = client.get(f"/users/{seeded.warm_user}/strategies/popular")
    assert r.status_code == 200
    asins = re.findall(r'<li class="rec" data-asin="([^"]+)"', r.text)
    assert len(asins) == 5 and not set(asins) & set(seeded.history)
    assert r.text.count('class="reason"') == 5
    # retriever and ALS are down here: the gateway falls back and says so.
    hybrid = client.get(f"/users/{seeded.warm_user}/strategies/hybrid")
    assert hybrid.status_code == 200 and "degraded" in hybrid.text


def test_strategy_fragment_with_the_gateway_down_says_down(dash_settings: DashboardSettings, seeded: Seeded) -> None:
    with TestClient(create_app(dash_settings.model_copy(update={"GATEWAY_URL": dead_url()}))) as c:
        r = c.get(f"/users/{seeded.warm_user}/strategies/hybrid")
        page = c.get(f"/users/{seeded.warm_user}")
    assert r.status_code == 200 and '<span class="badge bad">down</span> gateway: gateway: unreachable' in r.text
    # the history still comes from the database; only the profile panel is down
    assert page.status_code == 200 and "Soft Wig Model 0" in page.text
    assert '<span class="badge bad">down</span> gateway:' in page.text


def test_unknown_user_gets_a_404_page(client: TestClient) -> None:
    r = client.get(f"/users/NOBODY{uuid.uuid4().hex[:8]}")
    assert r.status_code == 404 and "Unknown user" in r.text and "No reviews and no profile" in r.text
    _no_traceback(r.text)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/users/" + "x" * 300, 400, "ids have at most 128"),
        ("/users/a%20b", 400, "ids contain only letters"),
        ("/users/%3Cscript%3E", 400, "Not a valid user id"),
        ("/users?user_id=", 400, "the id is empty"),
        ("/users?user_id=" + "y" * 20_000, 422, "Invalid request"),
        ("/items/" + "z" * 129, 400, "Not a valid parent_asin"),
        ("/items/%E2%80%AE%00", 400, "Not a valid parent_asin"),
        ("/items/a%2Fb", 400, "Not a valid parent_asin"),
        ("/users/a%2F..%2Fb", 400, "Not a valid user id"),
        ("/users/U1/strategies/bogus", 404, "Unknown strategy"),
        ("/no/such/page", 404, "Page not found"),
    ],
)
def test_bad_input_gets_a_clear_4xx_page(client: TestClient, path: str, status: int, message: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    assert message in r.text
    assert "<script>" not in r.text  # odd ids are escaped
    _no_traceback(r.text)


def test_search_redirects_to_the_page(client: TestClient) -> None:
    r = client.get("/users", params={"user_id": " AB-12.x "}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/users/AB-12.x"
    r = client.get("/items", params={"parent_asin": "B00X"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/items/B00X"


def test_test_review_with_ingest_down_says_so(client: TestClient, seeded: Seeded) -> None:
    path = f"/users/{seeded.warm_user}/test-review"
    r = client.post(path, data={"parent_asin": seeded.items[30]}, headers={"X-Requested-With": "fetch"})
    assert r.status_code == 502 and "not posted" in r.text and "ingest: unreachable" in r.text
    page = client.post(path, data={"parent_asin": seeded.items[30]}, follow_redirects=False)
    assert page.status_code == 502 and "Test review not posted" in page.text
    bad = client.post(path, data={"parent_asin": seeded.items[30], "rating": "7"})
    assert bad.status_code == 422 and "Invalid test review" in bad.text
    cross = client.post(path, data={}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403


# ---- item ----------------------------------------------------------------------------------------


def test_item_page_shows_metadata_and_coreview_neighbours(client: TestClient, seeded: Seeded) -> None:
    r = client.get(f"/items/{seeded.items[0]}")
    assert r.status_code == 200
    assert "Soft Wig Model 0, cotton finish" in r.text and "Soft cotton wig" in r.text
    neighbours = re.findall(r'<li data-asin="([^"]+)"><a href="/items/', r.text)
    # the warm user reviewed items 0..5 together: those are item 0's co-review neighbours
    assert set(seeded.history[1:]) <= set(neighbours)
    assert '<span class="badge bad">down</span> retriever:' in r.text  # content neighbours: retriever down


def test_unknown_item_gets_a_404_page(client: TestClient) -> None:
    r = client.get(f"/items/NOITEM{uuid.uuid4().hex[:8]}")
    assert r.status_code == 404 and "Unknown item" in r.text


# ---- evaluation ----------------------------------------------------------------------------------


def test_evaluation_page_without_a_report_says_where_it_looks(client: TestClient, eval_dir: Path) -> None:
    r = client.get("/evaluation")
    assert r.status_code == 200 and "No <code>recsys evaluate</code> report" in r.text and str(eval_dir) in r.text


@pytest.mark.slow
def test_evaluation_page_renders_the_newest_report(
    client: TestClient, settings: CommonSettings, eval_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    synth = subprocess.run([RECSYS, "synth", "--users", "30", "--items", "40", "--seed", "3", "--out", str(data)],
                           capture_output=True, text=True, timeout=120)
    assert synth.returncode == 0, synth.stderr[-1000:]
    for name in ("older", "newer"):
        run = subprocess.run(
            [RECSYS, "evaluate", "--reviews", str(data / "reviews.jsonl"), "--meta", str(data / "meta.jsonl"),
             "--out", str(eval_dir / "runs" / name), "--k", "5",
             "--strategies", "popular" if name == "older" else "popular,itemknn"],
            capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, run.stderr[-2000:]
    r = client.get("/evaluation")
    assert r.status_code == 200
    assert str(eval_dir / "runs" / "newer") in r.text and "Latest of 2 reports" in r.text
    overall = re.search(r'<table class="metrics" data-group="overall">(.*?)</table>', r.text, re.S)
    assert overall and 'data-strategy="itemknn"' in overall.group(1) and "ndcg@5" in overall.group(1)
    assert 'aria-label="ndcg@5 per strategy"' in r.text  # the inline SVG chart
    images = re.findall(r'<img src="/evaluation/files/([^"]+)"', r.text)
    assert "metrics_per_strategy.png" in images
    png = client.get("/evaluation/files/metrics_per_strategy.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in ("metrics.json", "..%2Fmetrics.json", "nothere.png"):
        assert client.get(f"/evaluation/files/{bad}").status_code == 404, bad


# ---- auth and probes -----------------------------------------------------------------------------


def test_admin_key_locks_every_page_but_the_probes(dash_settings: DashboardSettings) -> None:
    locked = dash_settings.model_copy(update={"ADMIN_KEY": "adm-secret", "API_KEYS": ["write-key"]})
    with TestClient(create_app(locked)) as c:
        for path in ("/", "/users/U1", "/items/B1", "/evaluation", "/static/../evaluation"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Basic realm=")
        basic = base64.b64encode(b"ops:adm-secret").decode()
        assert c.get("/evaluation", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert c.get("/evaluation", headers={"Authorization": "Bearer adm-secret"}).status_code == 200
        wrong = base64.b64encode(b"ops:write-key").decode()
        assert c.get("/evaluation", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
        assert c.get("/evaluation", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
    with TestClient(create_app(dash_settings.model_copy(update={"API_KEYS": ["write-key"]}))) as c:
        r = c.get("/")
        assert r.status_code == 403 and "RECSYS_ADMIN_KEY" in r.text


def test_readyz_reports_the_database_without_requiring_it(dash_settings: DashboardSettings) -> None:
    dead_db = dash_settings.model_copy(
        update={"DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"})
    with TestClient(create_app(dead_db)) as c:
        r = c.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["db"]["reachable"] is False


def test_assets_are_served_by_the_dashboard(client: TestClient) -> None:
    page = client.get("/evaluation").text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert sorted(assets) == ["/static/dashboard.css", "/static/dashboard.js"]
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)  # nothing from another origin
    for a in assets:
        assert client.get(a).status_code == 200


# ---- pure parts ----------------------------------------------------------------------------------


def test_bar_chart_escapes_labels_and_scales_bars() -> None:
    svg = bar_chart([0, 5, 10], ["a", "<b>", "c"], title="t & u", height=120)
    assert svg.count('<rect class="bar"') == 3
    assert "&lt;b&gt;" in svg and "<b>" not in svg and "t &amp; u" in svg
    heights = [float(h) for h in re.findall(r'height="([\d.]+)"><title>', svg)]
    assert heights[0] == 0 and heights[2] == pytest.approx(2 * heights[1])


def test_reviews_per_minute_counts_by_ingest_minute(dash_settings: DashboardSettings) -> None:
    from services.dashboard import store

    user = f"RATE{uuid.uuid4().hex[:8]}"
    before = sum(b["count"] for b in store.reviews_per_minute(dash_settings.database_url, minutes=5))
    with session_scope(dash_settings.database_url) as s:
        for i in range(3):
            s.add(Review(user_id=user, parent_asin=f"{user}I{i}", timestamp=1_700_000_000_000 + i, rating=4.0))
    buckets = store.reviews_per_minute(dash_settings.database_url, minutes=5)
    assert len(buckets) == 5 and sum(b["count"] for b in buckets) - before >= 3
    assert buckets[-1]["count"] >= 3 or buckets[-2]["count"] >= 3  # this minute (or the one just ended)
