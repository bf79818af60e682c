"""JSON extraction and repair, and raw model output mapped to a structured profile."""

from __future__ import annotations

from services.profiler.repair import normalize_term, parse_json_object, profile_from_json


def test_json_repair_handles_fences_quotes_trailing_commas_and_truncation() -> None:
    assert parse_json_object(
        "```json\n{'preferred_products': ['serum',], liked_features: \"soft, gentle\"}\n```"
    ) == {"preferred_products": ["serum"], "liked_features": "soft, gentle"}
    assert parse_json_object('Sure! {"dislikes": ["smell"], "preferred_products": ["ser') == {
        "dislikes": ["smell"],
        "preferred_products": ["ser"],
    }
    assert parse_json_object("no json here") is None


def test_profile_from_json_maps_aliases_coerces_strings_and_deduplicates_across_fields() -> None:
    profile = profile_from_json(
        {
            "Preferred Products": "face serum, face serums; sunscreen",
            "likes": ["Lightweight", "lightweight", "the face serum"],
            "dislikes": "lipstick",
            "unrelated": ["ignored"],
        },
        max_terms=8,
    )
    assert profile.preferred_products == ["face serum", "sunscreen"]
    assert profile.liked_features == ["lightweight"]  # "the face serum" is already a preferred product
    assert profile.dislikes == ["lipstick"] and profile.potential_interests == []
    assert profile_from_json({"products": ["serum", "cream", "lotion"]}, max_terms=2).preferred_products == [
        "serum",
        "cream",
    ]


def test_normalize_term_refuses_sentences_and_content_free_terms() -> None:
    assert normalize_term("  The Face Serum. ") == "face serum"
    assert normalize_term("a very long sentence that is not a short term at all") is None
    assert normalize_term(True) is None and normalize_term("the") is None
