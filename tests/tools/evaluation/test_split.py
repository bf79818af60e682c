"""Split correctness: leave-last-out and global time, deterministic, cold users, no leaks."""
from __future__ import annotations

import random

import pytest

from tools.evaluation.split import Interaction, global_time, leave_last_out, make_split


def _i(user: str, asin: str, ts: int, rating: float = 5.0) -> Interaction:
    return Interaction(user_id=user, parent_asin=asin, rating=rating, timestamp=ts)


LOG = [
    _i("u1", "a", 1), _i("u1", "b", 2), _i("u1", "c", 3), _i("u1", "d", 4),
    _i("u2", "a", 5), _i("u2", "e", 6),
    _i("u3", "f", 7),
]


def test_leave_last_out_holds_out_the_newest_review_per_user() -> None:
    s = leave_last_out(LOG)
    held = {u: [t.parent_asin for t in v] for u, v in s.test.items()}
    assert held == {"u1": ["d"], "u2": ["e"], "u3": ["f"]}
    assert sorted((i.user_id, i.parent_asin) for i in s.train) == [
        ("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a")]
    # validation: second last, only for users with >= 3 reviews
    assert {u: [t.parent_asin for t in v] for u, v in s.validation.items()} == {"u1": ["c"]}
    assert sorted((i.user_id, i.parent_asin) for i in s.tune_train) == [("u1", "a"), ("u1", "b"), ("u2", "a")]


def test_single_review_users_are_cold_with_no_history() -> None:
    s = leave_last_out(LOG)
    assert s.cold_users == {"u3"}
    assert s.history("u3") == []
    assert [i.parent_asin for i in s.history("u1")] == ["a", "b", "c"]


def test_no_test_review_leaks_into_train() -> None:
    s = leave_last_out(LOG)
    held = {(t.user_id, t.parent_asin, t.timestamp) for v in s.test.values() for t in v}
    assert not held & {(i.user_id, i.parent_asin, i.timestamp) for i in s.train}
    assert not held & {(i.user_id, i.parent_asin, i.timestamp) for i in s.tune_train}


def test_deterministic_whatever_the_input_order_and_duplicates() -> None:
    shuffled = LOG + [LOG[0]]  # a replayed review changes nothing
    random.Random(3).shuffle(shuffled)
    a, b = leave_last_out(LOG), leave_last_out(shuffled)
    assert a.test == b.test and sorted(a.train, key=repr) == sorted(b.train, key=repr)


def test_same_timestamp_tie_is_broken_by_asin() -> None:
    s = leave_last_out([_i("u", "z", 1), _i("u", "a", 1)])
    assert s.test["u"][0].parent_asin == "z"


def test_global_time_cuts_everyone_at_one_time() -> None:
    s = global_time(LOG, test_fraction=0.3)  # 7 reviews -> cut at index 5 -> ts >= 6 is test
    assert {u: [t.parent_asin for t in v] for u, v in s.test.items()} == {"u2": ["e"], "u3": ["f"]}
    assert max(i.timestamp for i in s.train) < min(t.timestamp for v in s.test.values() for t in v)
    assert s.cold_users == {"u3"}  # u3's only review is after the cut
    assert not s.is_cold("u2")
    assert all(i.timestamp < 6 for i in s.tune_train)


def test_global_time_multi_item_test_sets() -> None:
    log = [_i("u", "a", 1), _i("u", "b", 8), _i("u", "c", 9), _i("v", "a", 2), _i("v", "b", 3)]
    s = global_time(log, test_fraction=0.4)
    assert [t.parent_asin for t in s.test["u"]] == ["b", "c"]


def test_make_split_rejects_unknown_kinds_and_fractions() -> None:
    with pytest.raises(ValueError):
        make_split(LOG, kind="random")
    with pytest.raises(ValueError):
        global_time(LOG, test_fraction=1.0)


def test_empty_log() -> None:
    s = leave_last_out([])
    assert s.test == {} and s.train == [] and s.cold_users == set()
