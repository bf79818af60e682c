"""The extractive profiler: vocabulary terms with rating and negation cues, and its three sentences."""

from __future__ import annotations

from services.profiler.extractive import extractive_profile
from services.profiler.history import build_history
from tests.profiler.samples import REVIEWS, TITLES, VOCAB


def test_extractive_profile_reads_products_likes_and_negated_dislikes() -> None:
    profile, sentences = extractive_profile(build_history("u1", REVIEWS, TITLES), VOCAB)
    assert profile.preferred_products == ["face serum", "sunscreen"]  # titles of the items rated 4+
    assert "lightweight" in profile.liked_features and "fragrance free" in profile.liked_features
    assert {"lipstick", "long lasting"} <= set(profile.dislikes)  # a 2-star review, "not long lasting"
    assert not set(profile.liked_features) & set(profile.dislikes)
    assert len(sentences) == 3 and sentences[0].startswith("This customer mostly buys face serum")


def test_without_a_catalog_vocabulary_the_users_own_words_are_used() -> None:
    profile, sentences = extractive_profile(build_history("u1", REVIEWS, TITLES), [])
    assert profile.preferred_products and profile.liked_features
    assert len(sentences) == 3 and all(s.endswith(".") for s in sentences)
