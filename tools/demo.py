"""``recsys demo`` and ``recsys compare``: the whole flow on the embedded stack, printed for people.

The demo starts the stack, generates (or loads) data, ingests it through the ingest API, waits with
progress bars until the retriever has indexed the items and the shown users have profiles, trains ALS,
then prints each shown user's history and every strategy's recommendations with reasons. The stack is
left running. Output goes to the terminal through ``typer.echo`` (this is a CLI module).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import typer
from tqdm import tqdm

from services.gateway import store
from services.gateway.config import GatewaySettings, get_settings
from shared.config import CommonSettings

SHOWN_STRATEGIES = ("hybrid", "llm_only", "als", "popular")
COLD_USER = "ADEMONEWUSER00000000000000001"


def _wait(desc: str, total: int, probe: Callable[[], int], *, timeout_s: float, every_s: float = 2.0) -> int:
    """Poll ``probe`` (returns progress so far) under a progress bar until ``total`` or the timeout."""
    done = 0
    deadline = time.monotonic() + timeout_s
    with tqdm(total=total, desc=desc, unit="") as bar:
        while time.monotonic() < deadline:
            try:
                now = min(total, probe())
            except Exception:  # a service still starting: keep waiting
                now = done
            bar.update(max(0, now - done))
            done = max(done, now)
            if done >= total:
                break
            time.sleep(every_s)
    return done


def _indexed(settings: GatewaySettings) -> int:
    r = httpx.get(f"{settings.RETRIEVER_URL}/readyz", timeout=5.0)
    return int(r.json().get("checks", {}).get("index", {}).get("size") or 0)


def _profiled(settings: GatewaySettings, users: list[str]) -> int:
    return sum(
        1
        for u in users
        if (store.get_profile(settings.database_url, user_id=u) or {}).get("status")
        in ("ready", "cold_start", "failed")
    )


def _reranked(settings: GatewaySettings, users: list[str]) -> int:
    """Shown users whose llm_only answer is the stored re-rank (or needs none: no LLM, a cold user)."""
    return sum(1 for u in users if _recommend(settings, u, "llm_only", 5, fresh=True).get("rerank") != "pending")


def admin_headers(settings: CommonSettings) -> dict[str, str]:
    """The admin key (it may also read personal data) as a bearer header, when one is configured."""
    return {"Authorization": f"Bearer {settings.ADMIN_KEY}"} if settings.ADMIN_KEY else {}


def train_als(settings: CommonSettings, *, timeout_s: float = 900.0) -> bool:
    """Train through the ALS service's API like any client: start a run, poll until it is live or not."""
    headers = admin_headers(settings)
    with httpx.Client(base_url=settings.ALS_URL, timeout=30.0, headers=headers) as als:
        r = als.post("/v1/models/train", json={})
        if r.status_code == 409:  # a training already runs (e.g. the retrain trigger): wait for it instead
            run_id = None
        elif r.status_code == 202:
            run_id = r.json()["run_id"]
        else:
            typer.echo(f"ALS training not started: HTTP {r.status_code} {r.text[:200]}", err=True)
            return False
        deadline = time.monotonic() + timeout_s
        with tqdm(total=1, desc="ALS training", unit="model") as bar:
            while time.monotonic() < deadline:
                time.sleep(2.0)
                try:
                    versions = als.get("/v1/models", params={"limit": 20}).json()
                except (httpx.HTTPError, ValueError):
                    continue
                runs = [v for v in versions if run_id is None or v.get("run_id") == run_id]
                done = [v for v in runs if v.get("status") != "training"]
                if run_id is None and runs and not any(v.get("status") == "training" for v in runs):
                    done = runs[:1]
                if done:
                    bar.update(1)
                    return done[0].get("status") in ("live", "retired", "rejected")  # rejected: the live one serves
    return False


def describe_ranker(settings: GatewaySettings) -> None:
    """Refit hybrid's ranking core on everything just loaded and say what it chose."""
    try:
        r = httpx.post(f"{settings.RETRIEVER_URL}/v1/ranker/refit", timeout=600.0, headers=admin_headers(settings))
        body = r.json()
    except (httpx.HTTPError, ValueError) as e:
        typer.echo(f"ranking core: not available ({e}); hybrid uses the vector pipeline", err=True)
        return
    if r.status_code != 200 or not body.get("ready"):
        typer.echo(f"ranking core: not ready (HTTP {r.status_code}); hybrid uses the vector pipeline", err=True)
        return
    model = body.get("model") or {}
    detail = (model.get("weights") or model.get("top_features")
              or {"blend": (model.get("blend") or {}).get("weights"),
                  "lambdarank trees": (model.get("lambdarank") or {}).get("trees")})
    typer.echo(
        f"ranking core for hybrid: {model.get('kind')} over {', '.join(body.get('sources') or [])} "
        f"({body.get('interactions')} reviews; validation NDCG@10 {body.get('validation_ndcg')}; "
        f"MMR lambda {body.get('mmr_lambda')}); {json.dumps(detail)}"
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from shared.amazon import iter_jsonl

    return [obj for _, obj, err in iter_jsonl(path) if err is None and obj is not None]


def _pick_users(reviews: list[dict[str, Any]], show: int) -> list[str]:
    counts = Counter(r.get("user_id") for r in reviews if r.get("user_id"))
    warm = [u for u, n in counts.most_common() if n >= 3][: max(0, show - 1)]
    return [str(u) for u in warm]


def _recommend(settings: GatewaySettings, user_id: str, strategy: str, k: int, *, fresh: bool = False
               ) -> dict[str, Any]:
    headers = admin_headers(settings) | ({"Cache-Control": "no-cache"} if fresh else {})
    try:
        r = httpx.get(
            f"{settings.GATEWAY_URL}/v1/users/{user_id}/recommendations",
            params={"k": k, "strategy": strategy},
            timeout=180.0,
            headers=headers,
        )
        body = r.json()
        return body if r.status_code == 200 else {"error": body, "items": []}
    except httpx.HTTPError as e:
        return {"error": str(e), "items": []}


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def print_user(settings: GatewaySettings, user_id: str, *, k: int) -> None:
    """One user's history, profile summary and each strategy's list with reasons."""
    typer.echo("=" * 100)
    history = store.user_history(settings.database_url, user_id=user_id, limit=10)
    profile = store.get_profile(settings.database_url, user_id=user_id)
    typer.echo(f"User {user_id}  ({len(history)} recent reviews shown)")
    for h in history:
        typer.echo(
            f"  {h['rating']:.0f}★  {_cut(h['item_title'] or h['parent_asin'], 70):70}  "
            f'"{_cut(h["review_title"] or "", 30)}"'
        )
    if not history:
        typer.echo("  (no history: a cold-start user)")
    if profile and profile.get("summary"):
        typer.echo(f"  profile v{profile['version']} ({profile['status']}): {_cut(profile['summary'], 200)}")
    for strategy in SHOWN_STRATEGIES:
        body = _recommend(settings, user_id, strategy, k)
        flags = []
        if body.get("cold_start"):
            flags.append("cold start")
        if body.get("degraded"):
            flags.append("degraded: " + ", ".join(body.get("notes") or []))
        if body.get("rerank") == "pending":
            flags.append("re-rank pending: the semantic-matching order")
        typer.echo(f"\n  [{strategy}]" + (f"  ({'; '.join(flags)})" if flags else ""))
        if body.get("error"):
            err = body["error"] if isinstance(body["error"], str) else json.dumps(body["error"])
            typer.echo(f"    error: {_cut(err, 160)}")
        typer.echo(f"    {'#':>2}  {'title':44}  {'rating':>6}  {'source':11}  reason")
        for n, item in enumerate(body.get("items") or [], start=1):
            rating = (
                f"{item['average_rating']:.1f}"
                if isinstance(item.get("average_rating"), int | float)
                else "-"
            )
            typer.echo(
                f"    {n:>2}  {_cut(item.get('title') or item['parent_asin'], 44):44}  {rating:>6}  "
                f"{_cut(item.get('channel') or item.get('source') or '', 11):11}  {_cut(item.get('reason') or '', 90)}"
            )


def run_demo(
    users: int = 300,
    items: int = 400,
    seed: int = 7,
    show: int = 3,
    reviews: Path | None = None,
    meta: Path | None = None,
) -> int:
    """The main job: up, data, ingest, index, profile, train, print. Leaves the stack running."""
    from tools import stack

    settings = get_settings()
    typer.echo("starting the stack (recsys up)…")
    rc = stack.up()
    if rc:
        typer.echo("the stack did not start; see `recsys status` and the logs under .recsys/", err=True)
        return int(rc)
    if (reviews is None) != (meta is None):
        typer.echo("pass both --reviews and --meta, or neither (synthetic data)", err=True)
        return 2
    if reviews is None or meta is None:
        from tools.synth import write

        out = settings.ensure_home() / "demo-data"
        counts = write(out, users=users, items=items, seed=seed)
        typer.echo(
            f"synthetic data: {counts['reviews']} reviews by {counts['users']} users on "
            f"{counts['items']} items in {out}"
        )
        reviews, meta = out / "reviews.jsonl", out / "meta.jsonl"
    from tools.ingest import main as ingest

    rc = ingest(reviews=reviews, meta=meta, url=settings.INGEST_URL, batch_size=500)
    if rc:
        return int(rc)
    review_rows = _read_jsonl(reviews)
    n_items = len({m.get("parent_asin") for m in _read_jsonl(meta) if m.get("parent_asin")})
    shown = _pick_users(review_rows, show)
    got = _wait("items indexed", n_items, lambda: _indexed(settings), timeout_s=600)
    if got < n_items:
        typer.echo(f"warning: only {got}/{n_items} items indexed so far; continuing", err=True)
    got = _wait("profiles of shown users", len(shown), lambda: _profiled(settings, shown), timeout_s=600)
    if got < len(shown):
        typer.echo(f"warning: {got}/{len(shown)} shown users have a profile so far; continuing", err=True)
    typer.echo("training ALS (Spark, local mode)…")
    if not train_als(settings):
        typer.echo("ALS training failed: the als strategy will fall back (degraded)", err=True)
    describe_ranker(settings)
    # llm_only serves the re-rank the explainer's LLM thread stores (requests never run the LLM): ask
    # once for each shown user (a request queues its re-rank ahead of the precomputing) and wait a little
    got = _wait("llm_only re-ranks of shown users", len(shown), lambda: _reranked(settings, shown), timeout_s=300,
                every_s=3.0)
    if got < len(shown):
        typer.echo(f"note: {got}/{len(shown)} llm_only re-ranks stored so far; the others show the matching order "
                   "(re-rank pending)", err=True)
    for user_id in [*shown, COLD_USER]:
        print_user(settings, user_id, k=5)
    print_next_steps(settings, shown[0] if shown else COLD_USER)
    return 0


def print_next_steps(settings: GatewaySettings, user_id: str) -> None:
    """The demo's last lines: what to try on the running stack, ending with the dashboard's URL."""
    typer.echo("=" * 100)
    typer.echo(
        f"The stack is still running. Try:\n"
        f"  curl '{settings.GATEWAY_URL}/v1/users/{user_id}/recommendations?k=5&strategy=hybrid'\n"
        f"  recsys compare {user_id}\n"
        f"  recsys status\n"
        f"Stop it with: recsys down"
    )
    typer.echo(f"  this user in the dashboard: {settings.DASHBOARD_URL}/users/{user_id}")
    typer.echo(f"Dashboard: {settings.DASHBOARD_URL}/")


def run_compare(user_id: str, k: int = 5) -> int:
    """The study's case study for one user against the running stack."""
    settings = get_settings()
    try:
        httpx.get(f"{settings.GATEWAY_URL}/healthz", timeout=3.0).raise_for_status()
    except httpx.HTTPError:
        typer.echo(
            f"the gateway at {settings.GATEWAY_URL} is not reachable: start the stack with `recsys up`",
            err=True,
        )
        return 1
    print_user(settings, user_id, k=k)
    return 0
