"""Each metric against hand-computed cases, including the edge cases the docstrings promise."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tools.evaluation import metrics as M


class TestRanking:
    def test_single_item_hit_at_rank_3(self) -> None:
        rec = ["a", "b", "c", "d"]
        assert M.hit_rate_at_k(rec, ["c"], 3) == 1.0
        assert M.hit_rate_at_k(rec, ["c"], 2) == 0.0
        assert M.recall_at_k(rec, ["c"], 3) == 1.0
        assert M.ndcg_at_k(rec, ["c"], 3) == pytest.approx(1 / math.log2(4))
        assert M.average_precision_at_k(rec, ["c"], 3) == pytest.approx(1 / 3)
        assert M.precision_at_k(rec, ["c"], 4) == pytest.approx(0.25)

    def test_multi_item(self) -> None:
        rec = ["a", "x", "b", "y"]
        rel = {"a", "b", "z"}
        assert M.recall_at_k(rec, rel, 4) == pytest.approx(2 / 3)
        dcg = 1 + 1 / math.log2(4)
        idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
        assert M.ndcg_at_k(rec, rel, 4) == pytest.approx(dcg / idcg)
        # AP: hits at 1 (P=1) and 3 (P=2/3), divided by min(|rel|, k) = 3
        assert M.average_precision_at_k(rec, rel, 4) == pytest.approx((1 + 2 / 3) / 3)
        # k=2 caps the denominator at 2
        assert M.average_precision_at_k(rec, rel, 2) == pytest.approx(1 / 2)

    def test_perfect_list_scores_one(self) -> None:
        assert M.ndcg_at_k(["a", "b"], ["a", "b"], 5) == pytest.approx(1.0)
        assert M.average_precision_at_k(["a", "b"], ["b", "a"], 5) == pytest.approx(1.0)

    def test_empty_list_scores_zero_and_no_relevant_is_undefined(self) -> None:
        assert M.hit_rate_at_k([], ["a"], 10) == 0.0
        assert M.ndcg_at_k([], ["a"], 10) == 0.0
        assert M.average_precision_at_k([], ["a"], 10) == 0.0
        assert M.recall_at_k(["a"], [], 10) is None
        assert M.ndcg_at_k(["a"], [], 10) is None

    def test_k_larger_than_list_does_not_shrink_denominators(self) -> None:
        # one relevant of two found in a list of one: recall 0.5, precision counts k
        assert M.recall_at_k(["a"], ["a", "b"], 10) == pytest.approx(0.5)
        assert M.precision_at_k(["a"], ["a"], 10) == pytest.approx(0.1)
        idcg = 1 + 1 / math.log2(3)
        assert M.ndcg_at_k(["a"], ["a", "b"], 10) == pytest.approx(1 / idcg)

    def test_duplicates_count_once_at_first_position(self) -> None:
        assert M.recall_at_k(["a", "a", "b"], ["b"], 2) == 1.0  # duplicate does not push b out
        assert M.ndcg_at_k(["a", "a", "b"], ["a"], 3) == pytest.approx(1.0)

    def test_ties_are_the_order_given(self) -> None:
        # the same scores in a different order give different ranks: the metric follows the list
        assert M.ndcg_at_k(["a", "b"], ["b"], 2) != M.ndcg_at_k(["b", "a"], ["b"], 2)

    def test_k_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            M.ndcg_at_k(["a"], ["a"], 0)


class TestRatings:
    def test_rmse_mae(self) -> None:
        pairs = [(4.0, 5.0), (3.0, 1.0), (2.5, 2.5)]
        assert M.rmse(pairs) == pytest.approx(math.sqrt((1 + 4 + 0) / 3))
        assert M.mae(pairs) == pytest.approx(1.0)

    def test_empty_is_undefined(self) -> None:
        assert M.rmse([]) is None
        assert M.mae([]) is None


class TestStudyMetrics:
    def test_cold_start_ratio(self) -> None:
        assert M.cold_start_ratio([True, False, True, True]) == 0.75
        assert M.cold_start_ratio([True, True]) == 1.0  # all cold
        assert M.cold_start_ratio([]) is None

    def test_ad_dup_ratio_reproduces_the_studys_table_2(self) -> None:
        cold = [["Top rated pick."] * 5 for _ in range(27)]  # one slogan for everybody
        warm_reasons = [f"slogan {i}" for i in range(95)] + [f"slogan {i}" for i in range(20)]
        warm = [warm_reasons[i:i + 5] for i in range(0, 115, 5)]
        assert M.ad_dup_ratio(cold) == pytest.approx(0.9926, abs=1e-4)
        assert M.ad_dup_ratio(warm) == pytest.approx(0.1739, abs=1e-4)
        assert M.ad_dup_ratio(cold + warm) == pytest.approx(0.6160, abs=1e-4)

    def test_ad_dup_ratio_normalizes_and_skips_blanks(self) -> None:
        assert M.ad_dup_ratio([["Great  Wig", "great wig", None, "  "]]) == pytest.approx(0.5)
        assert M.ad_dup_ratio([[None, ""]]) is None
        assert M.ad_dup_ratio([]) is None

    def test_avg_rating_pools_items_and_skips_unknown(self) -> None:
        assert M.avg_rating([[5.0, 4.0], [3.0, None]]) == pytest.approx(4.0)
        assert M.avg_rating([[None]]) is None

    def test_specificity_uses_the_vocabulary(self) -> None:
        vocab = ["human hair", "wig", "lipstick"]
        # "soft human hair wigs" contains "human hair"; "softness" contains nothing
        terms = ["soft human hair", "softness", "red lipstick", "bangs"]
        assert M.specificity(terms, vocab) == pytest.approx(0.5)
        assert M.specificity([], vocab) is None
        assert M.avg_specificity([["wig", "bangs"], None, ["lipstick"]], vocab) == pytest.approx(0.75)
        assert M.avg_specificity([None, None], vocab) is None

    def test_avg_cos_sim_skips_cold_users(self) -> None:
        p = np.array([1.0, 0.0])
        items = np.array([[1.0, 0.0], [0.0, 2.0]])  # cos 1 and 0 (norm does not matter)
        assert M.avg_cos_sim([p, None], [items, items]) == pytest.approx(0.5)
        assert M.avg_cos_sim([None], [items]) is None
        assert M.avg_cos_sim([p], [np.zeros((0, 2))]) is None


class TestBeyondAccuracy:
    def test_catalog_coverage(self) -> None:
        assert M.catalog_coverage([["a", "b"], ["b", "c", "d"]], 10, 2) == pytest.approx(3 / 10)
        assert M.catalog_coverage([], 10, 2) == 0.0
        assert M.catalog_coverage([["a"]], 0, 2) is None

    def test_intra_list_diversity(self) -> None:
        orth = np.eye(3)
        same = np.ones((3, 2))
        assert M.intra_list_diversity([orth]) == pytest.approx(1.0)
        assert M.intra_list_diversity([same]) == pytest.approx(0.0)
        assert M.intra_list_diversity([orth, same]) == pytest.approx(0.5)
        assert M.intra_list_diversity([np.eye(1)]) is None  # a single item has no pairs

    def test_novelty(self) -> None:
        pop = {"a": 3, "b": 0}
        # p(a) = 4/8, p(b) = 1/8 with 7 users: bits 1 and 3
        assert M.novelty([["a", "b"]], pop, 7, 10) == pytest.approx(2.0)
        assert M.novelty([["a"], []], pop, 7, 10) == pytest.approx(1.0)
        assert M.novelty([[]], pop, 7, 10) is None


class TestExplanations:
    def test_unique_reason_ratio_is_per_list(self) -> None:
        assert M.unique_reason_ratio([["x", "x"], ["y", "z"]]) == pytest.approx(0.75)
        assert M.unique_reason_ratio([[]]) is None

    def test_feature_mention_ratio(self) -> None:
        pairs = [("Soft bangs you will adore", ["Curly bangs", "Heat resistant"]),
                 ("A best seller", ["Heat resistant"]),
                 (None, ["x"]),  # no reason: not counted
                 ("Anything", [])]  # no features: not counted
        assert M.feature_mention_ratio(pairs) == pytest.approx(0.5)
        assert M.feature_mention_ratio([]) is None

    def test_grounding_ratio_matches_plurals_and_skips_cold(self) -> None:
        pairs = [("Perfect wigs for you", ["wig", "softness"]),
                 ("Rated 4.5 by shoppers", ["wig"]),
                 ("Anything", None)]
        assert M.grounding_ratio(pairs) == pytest.approx(0.5)
        assert M.grounding_ratio([("x", None)]) is None

    def test_stopwords_do_not_match(self) -> None:
        assert not M.mentions("the best product for you", ["the product"])
