"""Cleaning an LLM summary into sentences and the three-sentence rule."""

from __future__ import annotations

from services.profiler.summary import clean_sentences, split_sentences, three_sentences


def test_clean_sentences_drops_preambles_and_list_markers() -> None:
    assert clean_sentences(
        "Here are three sentences:\n1. She buys serum often.\n- She likes light creams a lot."
    ) == ["She buys serum often.", "She likes light creams a lot."]


def test_three_sentences_are_completed_position_wise_from_the_fallback() -> None:
    fallback = ["First fallback.", "Second fallback.", "Third fallback."]
    assert three_sentences(["One.", "Two.", "Three.", "Four."], fallback) == ("One. Two. Three.", "llm")
    assert three_sentences(["One."], fallback) == ("One. Second fallback. Third fallback.", "mixed")
    assert three_sentences([], fallback) == (" ".join(fallback), "extractive")
    assert split_sentences("She buys serum. 2 more items!\nNext line") == [
        "She buys serum.",
        "2 more items!",
        "Next line",
    ]
