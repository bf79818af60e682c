"""Grounding a structured profile in the user's evidence and the vocabulary; what makes one usable."""

from __future__ import annotations

from services.profiler.history import build_history
from services.profiler.structured import StructuredProfile, ground, usable_profile
from tests.profiler.samples import REVIEWS, TITLES, VOCAB


def test_grounding_keeps_terms_from_the_reviews_or_the_vocabulary_and_drops_invented_ones() -> None:
    evidence = build_history("u1", REVIEWS, TITLES).evidence
    profile = StructuredProfile(
        preferred_products=["face serum", "quantum hoverboard"], potential_interests=["night cream"]
    )
    grounded, dropped = ground(profile, evidence=evidence, vocab=VOCAB)
    assert grounded.preferred_products == ["face serum"]
    assert grounded.potential_interests == ["night cream"]  # not in the reviews, but in the vocabulary
    assert dropped == ["quantum hoverboard"]
    assert ground(profile, evidence=evidence, vocab=[])[0].potential_interests == []


def test_a_usable_profile_has_two_terms_and_a_product_or_a_liked_feature() -> None:
    assert usable_profile(StructuredProfile(preferred_products=["face serum"], dislikes=["smell"]))
    assert not usable_profile(StructuredProfile(preferred_products=["face serum"]))
    assert not usable_profile(StructuredProfile(dislikes=["smell", "greasy"]))
