"""The Spark neighbour lists: the same numbers as the retriever's in-process sources, written by a
training run under its version, live with the model, served by the retriever's ranking core (which
then ranks exactly as when it fits them itself), and picked up when models.v1 says a version is live.

Real Spark (the session's local[2] session) and real PostgreSQL (a database of this module's own: it
trains models of its own and must not disturb the other ALS tests' live versions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

from services.als import store, training
from services.als.config import AlsSettings
from services.als.neighbours import compute_neighbours
from services.als.training import run_training
from services.retriever.config import RetrieverSettings
from services.retriever.ranking.live import LiveRanker
from services.retriever.service import RetrieverService
from services.retriever.sources import CoReviewSource, TransitionSource
from services.retriever.store import training_data
from shared.db import session_scope
from shared.events import ModelEvent
from shared.models import ItemNeighbours, Review
from shared.neighbours import (
    COREVIEW,
    backward_kind,
    forward_kind,
    interactions_fingerprint,
    live_neighbour_versions,
    load_neighbours,
)
from tests.als.synth import planted_ratings
from tests.utils.databases import temporary_database
from tests.utils.records import messy_log
from tests.utils.settings import service_settings


def python_lists(frame: pd.DataFrame, *, top: int, windows: tuple[int, ...], transitions_top: int = 0,
                 ) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """What the retriever's sources fit on the same rows, in the stored form."""
    rows = [SimpleNamespace(user_id=u, parent_asin=a, rating=float(r), timestamp=int(t))
            for u, a, r, t in zip(frame["user_id"], frame["parent_asin"], frame["rating"], frame["timestamp"],
                                  strict=True)]
    co = CoReviewSource(neighbours=top)
    co.fit(interactions=rows)
    out = {COREVIEW: co.as_lists()}
    for w in windows:
        tr = TransitionSource(window=w, neighbours=transitions_top or None)
        tr.fit(interactions=rows)
        out[forward_kind(w)], out[backward_kind(w)] = tr.as_lists()
    return out


def messy_frame(seed: int = 5) -> pd.DataFrame:
    """The shared messy log (ties in time, repeats, duplicate rows, one-review users) as the job's frame."""
    rows = [(i.user_id, i.parent_asin, i.rating, i.timestamp) for i in messy_log(seed, users=80, items=25)]
    return pd.DataFrame(rows, columns=["user_id", "parent_asin", "rating", "timestamp"])


@pytest.mark.parametrize(("top", "transitions_top"), [(100, 0), (4, 2)])
def test_spark_lists_equal_the_python_sources(spark: Any, top: int, transitions_top: int) -> None:
    frame = messy_frame()
    result = compute_neighbours(frame, spark=spark, top=top, windows=(1, 2), transitions_top=transitions_top)
    expected = python_lists(frame, top=top, windows=(1, 2), transitions_top=transitions_top)
    assert set(result.lists) == {COREVIEW, "forward.w1", "backward.w1", "forward.w2", "backward.w2"}
    for kind, lists in expected.items():
        assert result.lists[kind] == lists, kind  # same items, order and doubles, bit for bit
    assert result.lists[COREVIEW]["solo-item"] == []  # every item has a row
    meta = result.meta
    assert meta["items"] == frame["parent_asin"].nunique() and meta["interactions"] == len(frame)
    assert meta["top"] == top and meta["windows"] == [1, 2] and meta["transitions_top"] == transitions_top
    assert meta["pairs"][COREVIEW] == sum(len(v) for v in expected[COREVIEW].values())
    assert meta["fingerprint"] == interactions_fingerprint(
        zip(frame["user_id"], frame["parent_asin"], frame["timestamp"], strict=True))


# ---- a training run on a database of its own --------------------------------------------------------
@pytest.fixture(scope="module")
def nb_settings(als_settings: AlsSettings) -> Iterator[AlsSettings]:
    with temporary_database("recsys_test_als_nb") as url:
        yield als_settings.model_copy(update={"DATABASE_URL": url, "ALS_REFIT_ON_ALL": False,
                                              "ALS_FACTOR_GATE": False, "ALS_NEIGHBOURS": True})


def seed_reviews(url: str, frame: pd.DataFrame) -> None:
    with session_scope(url) as s:
        s.add_all(Review(user_id=r.user_id, parent_asin=r.parent_asin, timestamp=int(r.timestamp),
                         rating=float(r.rating)) for r in frame.itertuples())


@pytest.fixture(scope="module")
def trained(nb_settings: AlsSettings, spark: Any) -> dict[str, Any]:
    """A retriever core fitted in-process first, then a training run that writes the lists."""
    url = nb_settings.database_url
    seed_reviews(url, planted_ratings(users=120, items=60, seed=11))
    before = LiveRanker(database_url=url, refit_s=3600, tune_users=300)
    assert before.refit(None) and before.core is not None
    assert before.core.served_lists_version is None  # no model yet: fitted in-process

    seen: dict[str, Any] = {}
    finish = training._finish

    def spy(settings: AlsSettings, *, version: int, **kw: Any) -> Any:
        # the lists are written, the version not live yet: nobody serves them
        seen["rows_before_live"] = store.count_neighbour_rows(settings.database_url, version=version)
        seen["live_before"] = [v for v, _ in live_neighbour_versions(settings.database_url)]
        return finish(settings, version=version, **kw)

    training._finish = spy  # type: ignore[assignment]
    try:
        result = run_training(nb_settings, spark=spark)
    finally:
        training._finish = finish  # type: ignore[assignment]
    return {"result": result, "seen": seen, "before": before}


def test_a_training_run_writes_the_lists_and_they_go_live_with_the_model(
    trained: dict[str, Any], nb_settings: AlsSettings
) -> None:
    result, seen = trained["result"], trained["seen"]
    assert result.status == "live", result
    url = nb_settings.database_url
    meta = result.metrics["neighbours"]
    kinds = {COREVIEW, "forward.w1", "backward.w1", "forward.w2", "backward.w2"}
    assert seen["rows_before_live"] == dict.fromkeys(kinds, meta["items"])
    assert result.version not in seen["live_before"]
    assert meta["rows"] == len(kinds) * meta["items"] and meta["pairs"][COREVIEW] > 0
    assert "neighbours_s" in result.metrics["timings_s"]
    assert [v for v, _ in live_neighbour_versions(url)] == [result.version]
    assert store.get_live(url, kind="explicit").metrics["neighbours"] == meta  # type: ignore[union-attr]
    # what is stored is what the retriever's sources fit on the reviews it reads
    with session_scope(url) as s:
        reviews, _ = training_data(s)
    frame = pd.DataFrame([r[:4] for r in reviews], columns=["user_id", "parent_asin", "rating", "timestamp"])
    stored = load_neighbours(url, version=result.version)
    assert stored.lists == python_lists(frame, top=100, windows=(1, 2))
    assert meta["fingerprint"] == interactions_fingerprint((r.user_id, r.parent_asin, r.timestamp) for r in reviews)


def test_retriever_serves_the_lists_and_ranks_like_the_in_process_fit(
    trained: dict[str, Any], nb_settings: AlsSettings
) -> None:
    version = trained["result"].version
    url = nb_settings.database_url
    served = LiveRanker(database_url=url, refit_s=3600, tune_users=300)
    own = LiveRanker(database_url=url, refit_s=3600, tune_users=300, use_stored_lists=False)
    assert served.refit(None) and own.refit(None)
    assert served.core is not None and own.core is not None
    assert served.core.report["served_from_lists"] == {
        "version": version, "sources": ["coreview", "transitions", "transitions_wide"]}
    assert own.core.served_lists_version is None
    with session_scope(url) as s:
        reviews, _ = training_data(s)
    histories: dict[str, list[str]] = {}
    for r in sorted(reviews, key=lambda r: (r.timestamp, r.parent_asin)):
        histories.setdefault(r.user_id, []).append(r.parent_asin)
    for user, history in sorted(histories.items())[:80]:
        assert served.core.rank(history=history, k=10, exclude=set(history)) == own.core.rank(
            history=history, k=10, exclude=set(history)), user


def test_a_models_event_makes_the_retriever_reload_the_lists(
    trained: dict[str, Any], nb_settings: AlsSettings, settings: Any
) -> None:
    """The core fitted before the model existed switches its sources to the lists on models.v1,
    without refitting (the data did not change): the model is the same object."""
    ranker: LiveRanker = trained["before"]
    version = trained["result"].version
    core = ranker.core
    assert core is not None and core.served_lists_version is None
    rsettings = service_settings(RetrieverSettings, settings, DATABASE_URL=nb_settings.database_url,
                                 RETRIEVER_RANKER=True, RETRIEVER_PROFILE_LISTENER=False)
    svc = RetrieverService(rsettings)  # not started: only its event handler is used
    svc.ranker = ranker
    ranker.fitted_at = 10**12  # far from due: only the event can wake it
    assert not ranker.due()
    event = ModelEvent(kind="explicit", version=version, promoted=True).model_dump(mode="json")
    svc.handle_model_events([SimpleNamespace(value=b"not json", partition=0, offset=0),
                             SimpleNamespace(value=json.dumps(event).encode(), partition=0, offset=1)])
    assert ranker.due()
    assert ranker.refit(None) is True
    assert ranker.core is not None and ranker.core is not core
    assert ranker.core.served_lists_version == version and ranker.core.model is core.model
    assert ranker.refit(None) is False  # nothing new: neither data nor lists
    # a not-promoted version does not wake it
    ranker.fitted_at = 10**12
    svc.handle_model_events([SimpleNamespace(value=json.dumps({**event, "promoted": False}).encode(),
                                             partition=0, offset=2)])
    assert not ranker.due()


def test_a_run_on_the_same_reviews_copies_the_live_lists(
    trained: dict[str, Any], nb_settings: AlsSettings, spark: Any
) -> None:
    """The implicit model trained on the same reviews: its lists are the explicit version's rows, copied."""
    url, first = nb_settings.database_url, trained["result"].version
    result = run_training(nb_settings, implicit=True, spark=spark)
    assert result.status == "live" and result.version != first
    meta = result.metrics["neighbours"]
    assert meta["copied_from"] == first and meta["rows"] == trained["result"].metrics["neighbours"]["rows"]
    assert load_neighbours(url, version=result.version).lists == load_neighbours(url, version=first).lists
    assert [v for v, _ in live_neighbour_versions(url)] == [result.version, first]
    trained["implicit"] = result.version


def test_pruned_lists_go_with_the_version_and_the_retriever_fits_itself(
    trained: dict[str, Any], nb_settings: AlsSettings
) -> None:
    url = nb_settings.database_url
    store.drop_artifacts(url, versions=[trained["result"].version, trained.get("implicit", -1)])
    with session_scope(url) as s:
        assert s.execute(select(func.count()).select_from(ItemNeighbours)).scalar_one() == 0
    ranker = LiveRanker(database_url=url, refit_s=3600, tune_users=300)
    assert ranker.refit(None) and ranker.core is not None and ranker.core.served_lists_version is None
