"""The LLM profile flow: generate, repair, ground, three sentences, retry and the extractive fallback
(injected LLMs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.profiler.profiles import profile_from_reviews
from services.profiler.summary import split_sentences
from shared.llm import CallableLLM, LLMTimeout
from tests.profiler.samples import GOOD_JSON, REVIEWS, THREE, TITLES, VOCAB


def llm_returning(profile: str, summary: str) -> CallableLLM:
    return CallableLLM(lambda p, json_schema=None, **_: profile if json_schema else summary, name="fake")


def sentences(text: str) -> list[str]:
    return split_sentences(text)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "lol",
        "}{][",
        "```json\n{{{\n```",
        "null",
        "[1, 2, 3]",
        '{"preferred_products": 42, "liked_features": {"x": null}}',
    ],
)
def test_garbage_output_ends_in_a_valid_extractive_profile(garbage: str) -> None:
    llm = llm_returning(garbage, garbage)
    result = profile_from_reviews(REVIEWS, TITLES, llm=llm, vocab=VOCAB)
    assert (
        result.status == "ready" and result.source == "extractive" and result.summary_source == "extractive"
    )
    assert result.profile.preferred_products and result.profile.liked_features
    assert "lipstick" in result.profile.dislikes or "long lasting" in result.profile.dislikes
    assert len(sentences(result.summary)) == 3
    assert result.error
    assert len(llm.calls) == 4  # profile + summary, each retried once


def test_an_llm_that_raises_or_times_out_falls_back_without_an_exception() -> None:
    def boom(_p: str, **_: Any) -> str:
        raise LLMTimeout("generation exceeded 1s")

    result = profile_from_reviews(REVIEWS, TITLES, llm=CallableLLM(boom), vocab=VOCAB)
    assert result.source == "extractive" and "LLMTimeout" in (result.error or "")
    assert len(sentences(result.summary)) == 3


def test_good_output_is_used_and_grounding_drops_invented_terms() -> None:
    invented = json.dumps(
        {
            "preferred_products": ["face serum", "quantum hoverboard"],
            "liked_features": ["lightweight", "blockchain synergy"],
            "dislikes": ["drying lipstick"],
            "potential_interests": ["night cream", "pet dragon"],
        }
    )
    result = profile_from_reviews(REVIEWS, TITLES, llm=llm_returning(invented, THREE), vocab=VOCAB)
    assert result.source == "llm" and result.summary_source == "llm"
    assert result.profile.preferred_products == ["face serum"]
    assert result.profile.liked_features == ["lightweight"]
    assert result.profile.potential_interests == ["night cream"]  # not in the reviews, but in the vocabulary
    assert set(result.dropped_terms) == {"quantum hoverboard", "blockchain synergy", "pet dragon"}
    assert result.summary == THREE


def test_summary_is_exactly_three_sentences_whatever_the_model_writes() -> None:
    one = profile_from_reviews(
        REVIEWS, TITLES, llm=llm_returning(GOOD_JSON, "She loves skincare for dry skin."), vocab=VOCAB
    )
    assert len(sentences(one.summary)) == 3 and one.summary_source == "mixed"
    assert one.summary.startswith("She loves skincare for dry skin.")
    five = (
        "Summary:\n1. She buys skincare. 2. She likes light textures a lot. 3. She will buy cream next. "
        "She also reads reviews carefully. She is picky about brands."
    )
    many = profile_from_reviews(REVIEWS, TITLES, llm=llm_returning(GOOD_JSON, five), vocab=VOCAB)
    assert len(sentences(many.summary)) == 3 and many.summary_source == "llm"
    assert "Summary" not in many.summary and "1." not in many.summary


def test_strings_are_coerced_to_lists_deduplicated_and_length_limited() -> None:
    raw = json.dumps(
        {
            "Preferred Products": "face serum, face serums; sunscreen",
            "likes": ["lightweight", "Lightweight", "a very long sentence that is not a short term at all"],
            "dislikes": "lipstick",
            "interests": [],
        }
    )
    result = profile_from_reviews(REVIEWS, TITLES, llm=llm_returning(raw, THREE), vocab=VOCAB)
    assert result.profile.preferred_products == ["face serum", "sunscreen"]
    assert result.profile.liked_features == ["lightweight"]


def test_users_without_review_text_are_cold_start() -> None:
    empty = [dict(r, title="", text="  ") for r in REVIEWS]
    llm = llm_returning(GOOD_JSON, THREE)
    result = profile_from_reviews(empty, TITLES, llm=llm, vocab=VOCAB)
    assert result.status == "cold_start" and result.profile.terms() == [] and result.summary == ""
    assert llm.calls == []
