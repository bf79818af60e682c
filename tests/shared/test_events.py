"""shared.events: event identity."""
from __future__ import annotations

from shared.events import ReviewEvent


def test_event_ids_are_stable_for_the_same_fact() -> None:
    a = ReviewEvent(user_id="U", parent_asin="P", timestamp=1, rating=5)
    b = ReviewEvent(user_id="U", parent_asin="P", timestamp=1, rating=4)
    c = ReviewEvent(user_id="U", parent_asin="P", timestamp=2, rating=5)
    assert a.event_id == b.event_id != c.event_id
