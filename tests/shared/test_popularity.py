"""Item statistics, the Bayesian average and the popular pick (pure logic, no infrastructure)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest

from shared.popularity import bayesian_average, item_stats, pick_popular, user_seed


def test_bayesian_average_shrinks_small_samples_towards_the_prior() -> None:
    assert bayesian_average(total=5.0, count=1, prior_mean=4.0, prior_count=10) == pytest.approx(45 / 11)
    assert bayesian_average(total=0.0, count=0, prior_mean=3.7, prior_count=10) == 3.7
    many = bayesian_average(total=4.9 * 1000, count=1000, prior_mean=4.0, prior_count=10)
    few = bayesian_average(total=5.0 * 2, count=2, prior_mean=4.0, prior_count=10)
    assert many > few  # 1000 ratings of 4.9 beat two fives


def test_stats_derived_from_reviews_when_metadata_lacks_them() -> None:
    items = [{"parent_asin": "A"}, {"parent_asin": "B", "average_rating": 4.5, "rating_number": 100}]
    reviews = [
        {"parent_asin": "A", "rating": 5.0},
        {"parent_asin": "A", "rating": 3.0},
        {"parent_asin": "B", "rating": 1.0},
        {"parent_asin": "C", "rating": 4.0},
    ]
    stats = item_stats(reviews, items, prior_count=10)
    assert (
        stats["A"].average_rating == 4.0 and stats["A"].rating_number == 2 and stats["A"].source == "reviews"
    )
    # metadata has the larger sample: it wins over our single review
    assert (
        stats["B"].average_rating == 4.5
        and stats["B"].rating_number == 100
        and stats["B"].source == "metadata"
    )
    assert stats["C"].rating_number == 1  # reviewed but no metadata row: still counted
    assert stats["B"].bayes_score > stats["A"].bayes_score


def test_more_reviews_than_metadata_means_reviews_win() -> None:
    items = [{"parent_asin": "A", "average_rating": 2.0, "rating_number": 1}]
    reviews = [{"parent_asin": "A", "rating": 5.0}] * 3
    s = item_stats(reviews, items)["A"]
    assert (s.average_rating, s.rating_number, s.source) == (5.0, 3, "reviews")


def test_dataframes_and_missing_values() -> None:
    items = pd.DataFrame(
        [
            {"parent_asin": "A", "average_rating": None, "rating_number": None},
            {"parent_asin": "B", "average_rating": 4.0, "rating_number": 3},
        ]
    )
    reviews = pd.DataFrame([{"parent_asin": "A", "rating": 2.0}, {"parent_asin": "A", "rating": 4.0}])
    stats = item_stats(reviews, items)
    assert stats["A"].average_rating == 3.0 and stats["A"].rating_number == 2
    assert stats["B"].average_rating == 4.0
    unrated = item_stats([], [{"parent_asin": "Z"}])["Z"]
    assert unrated.average_rating is None and unrated.rating_number == 0 and unrated.source == "none"


def _ranked(n: int, categories: int = 3) -> list[dict[str, object]]:
    """n items best first: scores 5.0, 4.99, ... and categories c0, c1, ... in turn."""
    return [
        {"parent_asin": f"A{i:03d}", "score": 5.0 - i / 100, "main_category": f"c{i % categories}"}
        for i in range(n)
    ]


def _asins(items: list[dict[str, object]]) -> list[str]:
    return [str(i["parent_asin"]) for i in items]


def test_pick_popular_is_deterministic_per_user_and_differs_across_users() -> None:
    ranked = _ranked(60)
    first = pick_popular(ranked, user_id="alice", k=5, tier=50)
    assert len(first) == 5 and len(set(_asins(first))) == 5
    assert pick_popular(ranked, user_id="alice", k=5, tier=50) == first
    lists = {tuple(_asins(pick_popular(ranked, user_id=f"u{i}", k=5, tier=50))) for i in range(10)}
    assert len(lists) >= 5
    assert user_seed("alice") == user_seed("alice") != user_seed("bob")
    assert user_seed(None) == user_seed("")


def test_pick_popular_draws_from_the_top_tier_only_and_skips_excluded_items() -> None:
    ranked = _ranked(200)
    excluded = {"A000", "A001", "A002"}
    for i in range(20):
        picked = _asins(pick_popular(ranked, user_id=f"u{i}", k=4, exclude=excluded, tier=10))
        # the tier is the first max(10, 3*4) = 12 items that are not excluded: A003..A014
        assert set(picked) <= {f"A{j:03d}" for j in range(3, 15)}
        assert not set(picked) & excluded
    # a k larger than the tier widens it to 3k
    wide = _asins(pick_popular(ranked, user_id="u", k=30, tier=10))
    assert len(wide) == 30 and set(wide) <= {f"A{j:03d}" for j in range(90)}


def test_pick_popular_mixes_categories_round_robin() -> None:
    ranked = _ranked(30, categories=3)
    picked = pick_popular(ranked, user_id="carol", k=6, tier=30)
    cats = [i["main_category"] for i in picked]
    assert len(set(cats[:3])) == 3 and len(set(cats[3:])) == 3  # one per category, twice
    # one category only: plain shuffled order, every item once
    single = [dict(i, main_category=None) for i in _ranked(8)]
    assert sorted(_asins(pick_popular(single, user_id="d", k=8, tier=8))) == _asins(single)


def test_pick_popular_without_noise_keeps_the_ranking_and_reads_objects() -> None:
    @dataclass
    class Row:
        parent_asin: str
        score: float
        main_category: str | None

    rows = [Row(f"B{i}", 4.0 - i / 10, None) for i in range(5)]
    assert pick_popular(rows, user_id="x", k=3, tier=5, temperature=0.0) == rows[:3]
    assert pick_popular([], user_id="x", k=3, tier=5) == []
    assert pick_popular(rows, user_id="x", k=0, tier=5) == []


def test_pick_popular_reads_the_ranking_lazily() -> None:
    """Only as much of ``ranked`` is read as the tier needs (callers pass a filter over a long list)."""
    read: list[int] = []

    def ranked() -> Iterator[dict[str, object]]:
        for i, item in enumerate(_ranked(1000)):
            read.append(i)
            yield item

    pick_popular(ranked(), user_id="y", k=5, tier=20)
    assert len(read) == 20


# -- popular_by_count: the one count-based definition --

DAY_MS = 86_400_000
NOW = 1_700_000_000_000


def _r(asin: str, days_ago: float, rating: float = 5.0) -> dict[str, object]:
    return {"parent_asin": asin, "rating": rating, "timestamp": int(NOW - days_ago * DAY_MS)}


def test_popular_by_count_counts_interactions_ties_by_asin() -> None:
    from shared.popularity import popular_by_count

    rows = [_r("B", 1), _r("A", 2), _r("C", 3), _r("C", 4), _r("B", 5), _r("D", 1)]
    assert popular_by_count(rows) == [("B", 2.0), ("C", 2.0), ("A", 1.0), ("D", 1.0)]


def test_popular_by_count_honours_the_window_and_the_rating_floor() -> None:
    from shared.popularity import popular_by_count

    rows = [_r("OLD", 400), _r("OLD", 400), _r("OLD", 380), _r("NEW", 10), _r("NEW", 5),
            _r("LOW", 1, rating=2.0), _r("LOW", 2, rating=1.0), _r("LOW", 3, rating=3.0)]
    assert popular_by_count(rows)[:2] == [("LOW", 3.0), ("OLD", 3.0)]  # all time, ties by asin
    recent = popular_by_count(rows, window_days=30, now=NOW)
    assert [a for a, _ in recent] == ["LOW", "NEW"]
    assert popular_by_count(rows, window_days=30, min_rating=4.0, now=NOW) == [("NEW", 2.0)]
    # now defaults to the newest interaction; later ones do not count as of an earlier now
    assert popular_by_count(rows, window_days=30) == recent
    assert popular_by_count(rows, now=NOW - 100 * DAY_MS) == [("OLD", 3.0)]


def test_popular_by_count_reads_a_dataframe_and_empty_input() -> None:
    from shared.popularity import popular_by_count

    df = pd.DataFrame([_r("A", 1), _r("A", 2), _r("B", 1)])
    assert popular_by_count(df) == [("A", 2.0), ("B", 1.0)]
    assert popular_by_count([]) == []
