"""Splits and cleaning (pure pandas)."""

from __future__ import annotations

import pandas as pd
import pytest

from services.als.data import clean_ratings, global_time, leave_last_out, make_split


def _frame(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "parent_asin", "rating", "timestamp"])


def test_leave_last_out_holds_out_each_users_newest_rating_only_with_history() -> None:
    ratings = clean_ratings(_frame([("a", "x", 5, 1), ("a", "y", 4, 3), ("a", "z", 2, 2), ("b", "x", 3, 9)]))
    split = leave_last_out(ratings)
    assert split.test[["user_id", "parent_asin"]].values.tolist() == [["a", "y"]]
    assert sorted(split.train["parent_asin"][split.train["user_id"] == "a"]) == ["x", "z"]
    assert split.train["user_id"].tolist().count("b") == 1  # single-rating user trains only


def test_global_time_holds_out_everything_after_the_cutoff() -> None:
    ratings = clean_ratings(_frame([(f"u{i}", f"i{i}", 4, i) for i in range(100)]))
    split = global_time(ratings, test_fraction=0.2)
    assert split.train["timestamp"].max() < split.test["timestamp"].min()
    assert 15 <= len(split.test) <= 25


def test_clean_keeps_the_latest_rating_of_a_repeated_pair_and_rejects_bad_input() -> None:
    ratings = clean_ratings(_frame([("a", "x", 1, 1), ("a", "x", 5, 2)]))
    assert ratings["rating"].tolist() == [5.0]
    with pytest.raises(ValueError, match="lack columns"):
        clean_ratings(pd.DataFrame({"user_id": ["a"]}))
    with pytest.raises(ValueError, match="unknown split"):
        make_split(ratings, kind="random")
