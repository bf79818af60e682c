"""shared.text: the one tokenizer, stop-word list and stemmer, and the text embedded for a profile."""

from __future__ import annotations

import pytest

from shared.text import content_stems, is_content, near_duplicate, profile_text, stem, tokens


def test_tokens_fold_accents_drop_apostrophes_and_lowercase() -> None:
    assert tokens("Don't  CRÈME-brûlée, 2x!") == ["dont", "creme", "brulee", "2x"]
    assert tokens("it\u2019s") == ["its"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [("serums", "serum"), ("brushes", "brush"), ("bristles", "bristle"), ("glasses", "glass"),
     ("berries", "berry"), ("softness", "soft"), ("curling", "curl"), ("gloss", "gloss"),
     ("citrus", "citrus"), ("wigs", "wig"), ("wig", "wig")],
)
def test_stem_maps_inflections_to_one_form(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_content_stems_skip_stop_words_numbers_and_shopper_words() -> None:
    assert content_stems("The customer likes 2 soft wigs for daily wear") == ("soft", "wig", "daily", "wear")
    assert not is_content("products") and not is_content("12") and not is_content("a")
    assert is_content("wig")


def test_the_same_word_grounds_the_same_way_everywhere() -> None:
    """Profile grounding, reason validation and the evaluation share content_stems: plural and
    singular forms match, so a term grounded by the profiler is grounded for the explainer too."""
    assert set(content_stems("Soft wigs")) <= set(content_stems("A soft wig with bangs"))


def test_near_duplicate_is_case_and_space_insensitive() -> None:
    assert near_duplicate("Great  wig for you", "great wig for you")
    assert not near_duplicate("Great wig for you", "A serum that hydrates")


def test_profile_text_has_the_positive_terms_and_never_the_dislikes() -> None:
    text = profile_text(summary="Loves soft wigs.", preferred_products=["wigs"], liked_features=["softness"],
                        potential_interests=["hair care"])
    assert text == "Loves soft wigs. Likes: wigs, softness Interested in: hair care"
    assert profile_text(summary=None) == ""
    assert profile_text(summary="", potential_interests=["serum"]) == "Interested in: serum"
