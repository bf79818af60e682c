"""The profiler's reads and writes on the real DB: newest reviews per user, titles, profile upsert + outbox row."""

from __future__ import annotations

from sqlalchemy import select

from services.profiler import store
from services.profiler.profiles import ProfileResult
from services.profiler.structured import StructuredProfile
from shared.db import session_scope
from shared.events import PROFILES
from shared.models import OutboxEvent
from tests.profiler.conftest import add_reviews


def test_recent_reviews_are_newest_first_and_capped_per_user(psettings, catalog, unique) -> None:
    user = f"store-{unique}"
    add_reviews(psettings, user, [(catalog["shampoo"], 5, "one"), (catalog["mascara"], 4, "two"),
                                  (catalog["lipstick"], 2, "three")])
    with session_scope(psettings.database_url) as s:
        by_user = store.recent_reviews(s, user_ids=[user, f"nobody-{unique}"], per_user=2)
        titles = store.item_titles(s, asins={r["parent_asin"] for r in by_user[user]})
        assert store.item_titles(s, asins=set()) == {}
    assert [r["text"] for r in by_user[user]] == ["three", "two"] and f"nobody-{unique}" not in by_user
    assert titles == {catalog["lipstick"]: "Matte Lipstick Long Lasting Red",
                      catalog["mascara"]: "Waterproof Volume Mascara Black"}


def test_upsert_bumps_the_version_and_writes_one_outbox_event_per_write(psettings, unique) -> None:
    user = f"upsert-{unique}"
    result = ProfileResult(user_id=user, status="ready", source="extractive", summary_source="extractive",
                           profile=StructuredProfile(preferred_products=["shampoo"]), summary="S.",
                           model_name="none")
    ids = []
    for _ in range(2):
        with session_scope(psettings.database_url) as s:
            row, outbox_id = store.upsert_profile(s, result=result, vector=None)
            ids.append(outbox_id)
    assert row.version == 2 and row.preferred_products == ["shampoo"] and row.embedding is None
    with session_scope(psettings.database_url) as s:
        events = s.scalars(select(OutboxEvent).where(OutboxEvent.key == user).order_by(OutboxEvent.id)).all()
        assert [e.id for e in events] == ids and {e.topic for e in events} == {PROFILES}
        assert [e.payload["version"] for e in events] == [1, 2] and events[0].published_at is None
        assert store.ready_user_ids(s, user_ids=[user, f"other-{unique}"]) == {user}
        assert set(store.profiles_by_user(s, user_ids=[user])) == {user}
