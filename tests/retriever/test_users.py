"""What a query knows about its user, on a running stack: stored profile vectors, the caller's history
and profile version sparing reads, and the live ALS top-N read from the database for the hybrid blend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.retriever.config import RetrieverSettings
from services.retriever.service import RetrieverService
from shared.db import session_scope
from shared.embeddings import Encoder, to_bytes
from shared.models import Profile

pytestmark = pytest.mark.slow


def test_stored_profile_vector_is_used(
    client: TestClient, rsettings: RetrieverSettings, encoder: Encoder, data: Any
) -> None:
    _, _, truth = data
    fam_name, fam = next(iter(truth["families"].items()))
    vec = encoder.encode([f"Loves {fam['noun']}: {', '.join(fam['likes'])}"])[0]
    with session_scope(rsettings.database_url) as s:
        s.merge(
            Profile(user_id="profiled-user", version=3, status="ready", summary="", embedding=to_bytes(vec))
        )
    body = client.post("/v1/candidates", json={"user_id": "profiled-user", "k": 5}).json()
    assert not body["cold_start"]
    hits = sum(truth["items"].get(i["parent_asin"]) == fam_name for i in body["items"])
    assert hits >= 3, body["items"]
    llm = client.post("/v1/candidates", json={"user_id": "profiled-user", "strategy": "llm_only"}).json()
    assert llm["strategy"] == "llm_only" and len(llm["items"]) <= 50
    assert all(i["average_rating"] >= 4.0 and i["rating_number"] >= 5 for i in llm["items"])


def test_hybrid_blends_the_live_als_top_n_read_from_the_database(
    client: TestClient, data: Any, rsettings: RetrieverSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without als_candidates, hybrid reads the user's stored top-N of the live ALS model itself."""
    from sqlalchemy import delete

    from shared.models import AlsItemIndex, AlsModel, AlsTopN

    svc: RetrieverService = client.svc  # type: ignore[attr-defined]
    monkeypatch.setattr(svc.users.als_live, "ttl_s", 0.0)  # see a model written a moment ago
    reviews = data[0]
    user = max({r["user_id"] for r in reviews}, key=lambda u: sum(r["user_id"] == u for r in reviews))
    no_als = {"user_id": user, "k": 32, "strategy": "hybrid", "als_candidates": []}
    before = client.post("/v1/candidates", json=no_als).json()
    assert before["als_version"] is None
    order = [i["parent_asin"] for i in before["items"]]
    boosted, other = order[-1], order[-2]  # ALS loves the item the vectors rank last
    with session_scope(rsettings.database_url) as s:
        model = AlsModel(kind="explicit", status="live")
        s.add(model)
        s.flush()
        version = model.version
        s.add(AlsItemIndex(model_version=version, item_ids="\n".join([other, boosted]).encode()))
        s.add(
            AlsTopN(
                model_version=version,
                user_id=user,
                items=np.asarray([1, 0], dtype="<i4").tobytes(),
                scores=np.asarray([5.0, 1.0], dtype="<f4").tobytes(),
            )
        )
    import services.retriever.users as users_mod

    reads: list[int] = []
    real_topn = users_mod.user_topn
    monkeypatch.setattr(
        users_mod, "user_topn", lambda *a, **kw: reads.append(kw["version"]) or real_topn(*a, **kw)
    )
    try:
        blended = client.post("/v1/candidates", json={"user_id": user, "k": 32, "strategy": "hybrid"}).json()
        assert blended["als_version"] == version
        ranked = [i["parent_asin"] for i in blended["items"]]
        assert ranked.index(boosted) < order.index(boosted)
        # a version's rows never change: the second request is served from memory
        again = client.post("/v1/candidates", json={"user_id": user, "k": 32, "strategy": "hybrid"}).json()
        assert again["items"] == blended["items"] and reads == [version]
        # a user the model does not know, and an explicit empty list, get no blend
        assert client.post("/v1/candidates", json={"user_id": "nobody-als", "strategy": "hybrid"}).json()[
            "als_version"
        ] is None
        assert client.post("/v1/candidates", json=no_als).json()["als_version"] is None
        assert 'recsys_retriever_als_blend_total{result="blended"}' in client.get("/metrics").text
    finally:
        with session_scope(rsettings.database_url) as s:
            s.execute(delete(AlsTopN).where(AlsTopN.model_version == version))
            s.execute(delete(AlsItemIndex).where(AlsItemIndex.model_version == version))
            s.execute(delete(AlsModel).where(AlsModel.version == version))


def test_history_and_profile_version_from_the_caller_spare_the_reads(
    client: TestClient, data: Any, rsettings: RetrieverSettings, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway sends the history and profile version it just read: same answer, fewer reads; a
    new profile version is read (and cached) again."""
    import services.retriever.users as users_mod

    reads = {"history": 0, "profile": 0}

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            reads[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(users_mod, "load_history", counting("history", users_mod.load_history))
    monkeypatch.setattr(users_mod, "load_profile", counting("profile", users_mod.load_profile))
    reviews = data[0]
    user = max({r["user_id"] for r in reviews}, key=lambda u: sum(r["user_id"] == u for r in reviews))
    history = [
        {"parent_asin": r["parent_asin"], "rating": r["rating"], "timestamp": r["timestamp"]}
        for r in reviews
        if r["user_id"] == user
    ]
    base = {"user_id": user, "k": 8, "strategy": "hybrid", "als_candidates": []}
    from_db = client.post("/v1/candidates", json=base).json()
    assert reads == {"history": 1, "profile": 1}
    given = {**base, "history": history, "profile_version": 0}
    for _ in range(2):
        body = client.post("/v1/candidates", json=given).json()
        assert [i["parent_asin"] for i in body["items"]] == [i["parent_asin"] for i in from_db["items"]]
    assert reads == {"history": 1, "profile": 2}  # history never read; profile once for version 0

    vec = encoder.encode(["Loves bright red lipstick and glossy nail polish"])[0]
    with session_scope(rsettings.database_url) as s:
        s.merge(Profile(user_id=user, version=1, status="ready", summary="", embedding=to_bytes(vec)))
    try:
        profiled = client.post("/v1/candidates", json={**given, "profile_version": 1}).json()
        assert reads["profile"] == 3 and reads["history"] == 1
        assert profiled["items"] != body["items"]  # the new profile steers the ranking
    finally:
        with session_scope(rsettings.database_url) as s:
            s.query(Profile).filter_by(user_id=user).delete()


def test_stored_dislike_vector_is_used_without_embedding(
    client: TestClient, rsettings: RetrieverSettings, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The profiler's dislikes vector is read with the profile: a request embeds nothing. A profile
    written without one (an older row) is embedded once per version, the same text the profiler uses."""
    from shared.text import dislikes_text

    svc: RetrieverService = client.svc  # type: ignore[attr-defined]
    stored_vec = encoder.encode(["Dislikes: strong perfume"])[0]
    with session_scope(rsettings.database_url) as s:
        s.merge(Profile(user_id="dislike-stored", version=1, status="ready", summary="", dislikes=["strong perfume"],
                        dislike_embedding=to_bytes(stored_vec)))
        s.merge(Profile(user_id="dislike-old-row", version=1, status="ready", summary="", dislikes=["glitter"]))
    encoded: list[list[str]] = []
    real_encode = svc.users.encoder.encode  # type: ignore[union-attr]
    monkeypatch.setattr(svc.users.encoder, "encode", lambda texts, **kw: encoded.append(list(texts))
                        or real_encode(texts, **kw))
    import contextlib

    from services.retriever.users import RequestConnection

    with contextlib.ExitStack() as stack:
        conn = RequestConnection(rsettings.database_url, stack)
        got = svc.users.signals(user_id="dislike-stored", profile_text=None, profile_vector=None, conn=conn)
        assert got.dislike_vector is not None and np.allclose(got.dislike_vector, stored_vec)
        assert encoded == []
        old = svc.users.signals(user_id="dislike-old-row", profile_text=None, profile_vector=None, conn=conn)
        again = svc.users.signals(user_id="dislike-old-row", profile_text=None, profile_vector=None, conn=conn)
    assert encoded == [[dislikes_text(["glitter"])]]
    assert old.dislike_vector is not None and np.allclose(old.dislike_vector, again.dislike_vector)
