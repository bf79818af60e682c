"""Domain vocabulary and the Average Specificity Score (pure logic + the DB-backed cache)."""

from __future__ import annotations

from pathlib import Path

from shared.config import CommonSettings
from shared.db import session_scope
from shared.models import Item
from shared.vocab import (
    build_vocabulary,
    catalog_vocabulary,
    find_vocab_terms,
    is_specific,
    ngrams,
    specificity,
)


def test_ngrams_never_cross_stop_words_numbers_or_punctuation() -> None:
    grams = ngrams("Skin care for dry skin, 2 pack of face serum")
    assert {"skin care", "dry skin", "face serum", "skin"} <= grams
    assert "care dry" not in grams and "skin face" not in grams and "for" not in grams
    assert not any(g.isdigit() for g in grams)


def test_vocabulary_ranks_by_document_frequency_and_is_deterministic() -> None:
    texts = ["face serum for dry skin", "night cream for dry skin", "dry skin lotion", "red lipstick"]
    vocab = build_vocabulary(texts, k=3)
    assert vocab == ["dry skin", "dry", "skin"]  # df 3 each: longer first, then alphabetical
    assert build_vocabulary(texts, k=3) == vocab
    assert len(build_vocabulary(texts * 50, k=200)) <= 200


def test_specificity_is_the_share_of_terms_containing_a_vocabulary_ngram() -> None:
    vocab = ["face serum", "lipstick", "dry skin"]
    assert is_specific("lightweight face serum", vocab)
    assert not is_specific("face", vocab)  # "face serum" is not inside "face"
    assert specificity(["matte lipstick", "nice things", "dry skin care", "good"], vocab) == 0.5
    assert specificity([], vocab) == 0.0
    assert find_vocab_terms("Great serum for dry skin and a lipstick", vocab) == ["dry skin", "lipstick"]


def test_catalog_vocabulary_is_cached_and_rebuilt_when_the_catalog_changes(
    settings: CommonSettings, unique: str, tmp_path: Path
):
    first = catalog_vocabulary(database_url=settings.database_url, home=tmp_path, k=500, ttl_s=0)
    files = list((tmp_path / "vocab").glob("*.json"))
    assert len(files) == 1
    assert catalog_vocabulary(database_url=settings.database_url, home=tmp_path, k=500, ttl_s=0) == first
    with session_scope(settings.database_url) as s:
        s.merge(
            Item(
                parent_asin=f"V{unique}",
                title="Zyxwv Quokka Brush",
                description=["quokka bristles"],
                features=[],
                categories=[],
                details={},
                extra={},
            )
        )
    second = catalog_vocabulary(database_url=settings.database_url, home=tmp_path, k=500, ttl_s=0)
    assert "quokka" in second and "quokka" not in first
    assert len(list((tmp_path / "vocab").glob("*.json"))) == 2
