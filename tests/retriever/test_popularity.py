"""Item statistics and the Bayesian average (pure logic, no infrastructure)."""

from __future__ import annotations

import pandas as pd
import pytest

from shared.popularity import bayesian_average, item_stats


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
