"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the running stack of
``conftest.py``: every page loads with live content, the test-review button changes the lists, and each
page's screenshot is written to the test output directory (``RECSYS_TEST_OUTPUT``, default
``test-output/dashboard``; the paths are printed and recorded as test properties).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.stack import RECSYS, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STRATEGIES = ("hybrid", "als", "llm_only", "popular")
LIST_TIMEOUT_MS = 240_000  # generous: four lists from a stack whose LLM workers share a loaded 2-core box


@pytest.fixture(scope="module")
def output_dir(pytestconfig: pytest.Config) -> Path:
    out = Path(os.environ.get("RECSYS_TEST_OUTPUT") or pytestconfig.rootpath / "test-output") / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # The system browser (apt-get install chromium, done by `make setup`): no `playwright install`.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def shoot(page: Any, output_dir: Path, record_property: Callable[[str, object], None]) -> Callable[[str], Path]:
    def take(name: str) -> Path:
        path = output_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000, path  # a rendered page, not a blank one
        record_property(f"screenshot_{name}", str(path))
        print(f"screenshot: {path}")
        return path

    return take


def _users_by_reviews(stack: Stack) -> list[str]:
    counts = Counter(json.loads(line)["user_id"] for line in open(stack.data / "reviews.jsonl"))
    return [u for u, n in counts.most_common() if n >= 3]


def _wait_for_lists(page: Any) -> dict[str, list[str]]:
    lists = {}
    for s in STRATEGIES:
        page.wait_for_selector(f"#strategy-{s}[data-loaded]", timeout=LIST_TIMEOUT_MS)
        lists[s] = page.eval_on_selector_all(f"#strategy-{s} li.rec", "els => els.map(e => e.dataset.asin)")
    return lists


def test_overview_shows_services_models_index_and_the_pipeline(stack: Stack, page: Any, shoot: Any) -> None:
    live = httpx.get(f"{stack.urls['als']}/v1/models/live", timeout=10).json()
    response = page.goto(stack.urls["dashboard"] + "/")
    assert response.status == 200
    for name in ("gateway", "ingest", "retriever", "explainer", "als"):
        assert page.get_attribute(f'tr[data-service="{name}"]', "data-state") == "up", name
    assert page.get_attribute(".als-version", "data-version") == str(live["version"])
    assert int(page.inner_text(".index-size")) >= stack.n_items
    assert "none live" in page.inner_text("#models")  # no implicit model yet: "none", not "down"
    assert page.locator('tr[data-topic="reviews.v1"]').count() == 1
    assert "events not yet published" in page.inner_text("#outbox")
    assert "jobs waiting" in page.inner_text("#profiler-queue")
    # The reviews the fixture just ingested (within the chart's hour) show up in the per-minute chart.
    rows = [json.loads(line) for line in open(stack.data / "reviews.jsonl")]
    n_reviews = len({(r["user_id"], r["parent_asin"], r["timestamp"]) for r in rows})
    assert int(page.inner_text("#rate-total")) >= n_reviews
    assert page.locator("#pipeline svg.chart rect.bar").count() == 60
    shoot("overview")


def test_user_page_shows_history_profile_and_four_strategies(stack: Stack, page: Any, shoot: Any) -> None:
    response = page.goto(f"{stack.urls['dashboard']}/users/{stack.warm_user}")
    assert response.status == 200
    assert page.locator("#history tbody tr[data-asin]").count() >= 3
    profile = httpx.get(f"{stack.urls['gateway']}/v1/users/{stack.warm_user}/profile", timeout=10).json()
    assert page.inner_text(".profile-version") == str(profile["version"])
    assert page.inner_text(".profile-source") in ("llm", "extractive")
    lists = _wait_for_lists(page)
    for s, asins in lists.items():
        assert len(asins) == 5 and len(set(asins)) == 5, (s, asins)
        reasons = page.eval_on_selector_all(f"#strategy-{s} li.rec .reason", "els => els.map(e => e.innerText)")
        assert all(r.strip() for r in reasons), (s, reasons)
    shoot("user")


def test_posting_a_test_review_changes_the_lists(stack: Stack, page: Any, shoot: Any) -> None:
    # Not the warm user: the HTTP e2e tests after this one expect that user's profile unchanged.
    user = next(u for u in _users_by_reviews(stack) if u != stack.warm_user)
    page.goto(f"{stack.urls['dashboard']}/users/{user}")
    before = _wait_for_lists(page)
    top = before["hybrid"][0]
    page.click("#post-test-review")
    page.wait_for_selector("#lists-changed", timeout=LIST_TIMEOUT_MS)
    assert page.get_attribute("[data-posted]", "data-posted") == top
    after = {s: page.eval_on_selector_all(f"#strategy-{s} li.rec", "els => els.map(e => e.dataset.asin)")
             for s in STRATEGIES}
    # The item just reviewed is history now: hybrid drops it, and the page marks the list as changed.
    assert top not in after["hybrid"] and len(after["hybrid"]) == 5, after
    assert page.get_attribute("#strategy-hybrid", "data-changed") == "yes"
    assert int(page.get_attribute("#lists-changed", "data-count") or 0) >= 1
    history = page.context.request.get(f"{stack.urls['dashboard']}/users/{user}")
    assert f'data-asin="{top}"' in history.text()  # the review is in the user's history
    shoot("user-after-test-review")


def test_item_page_shows_metadata_and_both_neighbour_lists(stack: Stack, page: Any, shoot: Any) -> None:
    page.goto(f"{stack.urls['dashboard']}/users/{stack.warm_user}")
    asin = page.get_attribute("#history tbody tr[data-asin]", "data-asin")
    response = page.goto(f"{stack.urls['dashboard']}/items/{asin}")
    assert response.status == 200
    item = httpx.get(f"{stack.urls['retriever']}/v1/items/{asin}", timeout=10).json()
    assert item["title"] in page.inner_text("h1")
    assert "from" in page.inner_text("#mean-rating")
    assert page.locator("#coreview li[data-asin]").count() >= 1
    assert page.locator("#content li[data-asin]").count() >= 1
    shoot("item")


def test_evaluation_page_shows_the_latest_report(stack: Stack, page: Any, shoot: Any) -> None:
    out = Path(stack.env["RECSYS_HOME"]) / "evaluation"
    run = subprocess.run(
        [RECSYS, "evaluate", "--reviews", str(stack.data / "reviews.jsonl"), "--meta", str(stack.data / "meta.jsonl"),
         "--out", str(out), "--strategies", "popular,itemknn", "--k", "5"],
        env=stack.env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    response = page.goto(stack.urls["dashboard"] + "/evaluation")
    assert response.status == 200
    assert str(out) in page.inner_text("#report")
    table = page.locator('table[data-group="overall"]')
    assert table.locator('tr[data-strategy="popular"]').count() == 1
    assert table.locator('tr[data-strategy="itemknn"]').count() == 1
    assert "ndcg@5" in table.inner_text()
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("figure img").count() >= 1
    shoot("evaluation")


def test_bad_ids_show_a_clear_message(stack: Stack, page: Any, shoot: Any) -> None:
    base = stack.urls["dashboard"]
    unknown = page.goto(f"{base}/users/NOSUCHUSER0000000000000000001")
    assert unknown.status == 404 and "Unknown user" in page.inner_text("h1")
    long_id = page.goto(f"{base}/users/{'x' * 500}")
    assert long_id.status == 400 and "at most 128" in page.inner_text(".message")
    odd = page.goto(f"{base}/items/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert odd.status == 400 and "Not a valid parent_asin" in page.inner_text("h1")
    page.goto(base + "/")
    page.fill('input[name="user_id"]', "no such user")
    page.click('form[action="/users"] button')
    assert "Not a valid user id" in page.inner_text("h1")
    assert "Traceback" not in page.content()
    shoot("bad-id")
