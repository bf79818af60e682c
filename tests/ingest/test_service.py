"""``ingest()``: the one write path; here on the embedded default (SQLite), same upsert/outbox semantics."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from services.ingest.service import ingest
from shared.db import session_scope, upgrade_database
from shared.models import Item, OutboxEvent, Review
from tests.utils.records import item, review


def test_sqlite_upsert_emits_only_for_new_or_changed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recsys.db'}"
    upgrade_database(url)
    r = review(nested={"a": [1, "\u0000"]})
    first = ingest(database_url=url, kind="reviews", records=[r, r | {"timestamp": r["timestamp"] + 1}])
    again = ingest(database_url=url, kind="reviews", records=[r])
    changed = ingest(database_url=url, kind="reviews", records=[r | {"text": "changed my mind"}])
    it = item()
    items = [ingest(database_url=url, kind="items", records=[it]) for _ in range(2)]
    assert (first.changed, again.changed, changed.changed) == (2, 0, 1)
    assert [x.changed for x in items] == [1, 0]
    with session_scope(url) as s:
        rows = list(
            s.scalars(select(Review).where(Review.user_id == r["user_id"]).order_by(Review.timestamp))
        )
        assert [x.text for x in rows] == ["changed my mind", r["text"]]
        # NUL is dropped from every stored string (PostgreSQL's text and JSON cannot hold it; issue 15)
        assert rows[0].extra == {"nested": {"a": [1, ""]}}
        assert rows[0].created_at is not None and rows[0].updated_at >= rows[0].created_at
        assert s.get(Item, it["parent_asin"]).row_hash
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 4

