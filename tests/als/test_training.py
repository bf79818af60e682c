"""Training runs against the real database: versions, promotion, failures, the lease, models.v1."""

from __future__ import annotations

import json
import threading
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

from services.als import store, training
from services.als.config import AlsSettings
from services.als.training import run_training
from shared.db import session_scope
from shared.events import MODELS
from shared.models import AlsFactor, AlsModel, AlsTopN, OutboxEvent


@pytest.fixture(scope="module")
def fast(als_settings: AlsSettings) -> AlsSettings:
    """No refit on all data: one Spark fit per run keeps the suite quick."""
    return als_settings.model_copy(update={"ALS_REFIT_ON_ALL": False})


@pytest.fixture(scope="module")
def first_live(fast: AlsSettings, seeded_db: pd.DataFrame, spark: Any) -> dict[str, Any]:
    """Two concurrent train requests: exactly one runs, and the first model of its kind goes live."""
    barrier = threading.Barrier(2)
    results: list[training.TrainResult] = []

    def go() -> None:
        barrier.wait()
        results.append(run_training(fast, spark=spark))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return {"results": results}


def test_concurrent_requests_run_once(first_live: dict[str, Any]) -> None:
    statuses = sorted(r.status for r in first_live["results"])
    assert statuses == ["live", "skipped"]
    skipped = next(r for r in first_live["results"] if r.status == "skipped")
    assert "already running" in skipped.reason and skipped.version is None


def test_first_model_is_promoted_with_metrics_factors_and_top_n(
    first_live: dict[str, Any], fast: AlsSettings, seeded_db: pd.DataFrame
) -> None:
    result = next(r for r in first_live["results"] if r.status == "live")
    m = result.metrics
    assert m["rmse"] < m["rmse_bias"] < m["rmse_global_mean"]
    assert m["factor_gate"]["factors"] == "kept"  # planted tastes: the factors beat the biases on validation
    assert {"recall_at_10", "ndcg_at_10", "recall_at_10_popularity", "mae"} <= set(m)
    live = store.get_live(fast.database_url, kind="explicit")
    assert live is not None and live.version == result.version and live.trained_at is not None
    assert live.params["rank"] == fast.ALS_RANK and live.n_users == seeded_db["user_id"].nunique()
    with session_scope(fast.database_url) as s:
        lists = s.execute(select(AlsTopN.items).where(AlsTopN.model_version == live.version)).scalars().all()
        n_factors = s.execute(
            select(func.count()).select_from(AlsFactor).where(AlsFactor.model_version == live.version)
        ).scalar_one()
    # One row per user, each a full list of ALS_TOP_N item ordinals (int32).
    assert len(lists) == live.n_users
    assert {len(b) for b in lists} == {4 * fast.ALS_TOP_N}
    assert n_factors == live.n_users + live.n_items
    # Top-N never contains an item the user already rated.
    user = seeded_db["user_id"].iloc[0]
    top = store.user_recommendations(fast.database_url, version=live.version, user_id=user, k=50)
    assert len(top) == min(50, fast.ALS_TOP_N)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)  # best first
    recs = {a for a, _ in top}
    assert recs <= set(seeded_db["parent_asin"])
    assert not recs & set(seeded_db.loc[seeded_db["user_id"] == user, "parent_asin"])


def test_models_event_is_published(first_live: dict[str, Any], fast: AlsSettings) -> None:
    from shared.kafka import make_consumer

    result = next(r for r in first_live["results"] if r.status == "live")
    with session_scope(fast.database_url) as s:
        rows = list(s.execute(select(OutboxEvent).where(OutboxEvent.topic == MODELS)).scalars())
    assert any(r.payload["version"] == result.version and r.published_at is not None for r in rows)
    consumer = make_consumer(fast, MODELS, group_id=None, consumer_timeout_ms=8000)
    try:
        events = [json.loads(rec.value) for rec in consumer]
    finally:
        consumer.close()
    # the topic is shared by the session: other modules' databases train versions with the same numbers
    mine = [e for e in events if e.get("version") == result.version and e.get("model") == "als"
            and e.get("kind") == "explicit"]
    assert mine and any(e["promoted"] is True for e in mine)


def test_worse_model_is_rejected_and_live_one_stays(
    first_live: dict[str, Any], fast: AlsSettings, spark: Any
) -> None:
    live_before = store.get_live(fast.database_url, kind="explicit")
    assert live_before is not None
    # Factors crushed by a huge penalty after 2 iterations: no better than the biases, worse than live.
    worse = run_training(fast, spark=spark, params={"rank": 2, "maxIter": 2, "regParam": 50.0})
    assert worse.status == "rejected" and not worse.promoted
    assert "worse than live" in worse.reason
    assert store.get_live(fast.database_url, kind="explicit").version == live_before.version
    assert store.count_recommendations(fast.database_url, version=worse.version) == 0
    assert store.get_version(fast.database_url, worse.version).status == "rejected"


def test_crashed_training_is_recorded_and_old_model_keeps_serving(
    first_live: dict[str, Any], fast: AlsSettings, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_before = store.get_live(fast.database_url, kind="explicit")

    def crash_midway(url: str, *, version: int, **_: Any) -> int:
        # Some rows reach the database, then the writer dies inside the same bulk transaction.
        return store.bulk_insert(
            url,
            "als_topn",
            ["model_version", "user_id", "items", "scores"],
            _rows_then_crash(version),
        )

    monkeypatch.setattr(store, "write_top_n", crash_midway)
    # A better-than-live model would be promoted: lower the bar so the crash happens on the write path.
    result = run_training(fast.model_copy(update={"ALS_PROMOTION_TOLERANCE": 10.0}), spark=spark)
    assert result.status == "failed" and "disk full (injected)" in (result.error or "")
    row = store.get_version(fast.database_url, result.version)
    assert row.status == "failed" and "disk full" in row.error
    assert store.get_live(fast.database_url, kind="explicit").version == live_before.version
    assert store.count_recommendations(fast.database_url, version=result.version) == 0
    with session_scope(fast.database_url) as s:
        assert (
            s.execute(
                select(func.count()).select_from(AlsFactor).where(AlsFactor.model_version == result.version)
            ).scalar_one()
            == 0
        )
    assert store.lease_holder(fast.database_url) is None  # the lease was released


def _rows_then_crash(version: int) -> Any:
    for n in range(3):
        yield version, f"someone-{n}", b"\x00\x00\x00\x00", b"\x00\x00\x80\x3f"
    raise OSError("disk full (injected)")


def test_lease_is_exclusive_reentrant_and_expires(fast: AlsSettings) -> None:
    url = fast.database_url
    assert store.acquire_lease(url, name="t-lease", owner="a", ttl_s=30)
    assert not store.acquire_lease(url, name="t-lease", owner="b", ttl_s=30)
    assert store.acquire_lease(url, name="t-lease", owner="a", ttl_s=30)  # re-entrant
    store.release_lease(url, name="t-lease", owner="a")
    assert store.acquire_lease(url, name="t-lease", owner="b", ttl_s=-1)  # already expired
    assert store.acquire_lease(url, name="t-lease", owner="c", ttl_s=30)  # takes the expired lease
    assert store.lease_holder(url, name="t-lease") == "c"
    store.release_lease(url, name="t-lease", owner="c")


def test_failed_versions_never_count_as_live(fast: AlsSettings) -> None:
    # A run of its own that fails before Spark is needed (too few ratings), so this test has a failed
    # version to check even when it runs alone; it is the newest version of its kind.
    before = store.get_live(fast.database_url, kind="explicit")
    failed = run_training(fast.model_copy(update={"ALS_MIN_RATINGS": 10**9}))
    assert failed.status == "failed" and failed.version is not None and "ratings" in (failed.error or "")
    assert store.get_version(fast.database_url, failed.version).status == "failed"
    assert store.recent_versions(fast.database_url, limit=1, kind="explicit")[0].version == failed.version
    live_row = store.get_live(fast.database_url, kind="explicit")
    assert live_row is None or live_row.version != failed.version
    assert (live_row and live_row.version) == (before and before.version)  # whatever served still serves
    assert store.lease_holder(fast.database_url) is None
    with session_scope(fast.database_url) as s:
        assert (
            s.execute(
                select(func.count())
                .select_from(AlsModel)
                .where(AlsModel.version == failed.version, AlsModel.status == "live")
            ).scalar_one()
            == 0
        )
        live = s.execute(
            select(func.count())
            .select_from(AlsModel)
            .where(AlsModel.kind == "explicit", AlsModel.status == "live")
        ).scalar_one()
    assert live <= 1
