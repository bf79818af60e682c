"""Lexical: TF-IDF of the item text; the text twin of a history item is its best content neighbour."""
from __future__ import annotations

from services.retriever.sources import CandidateSource, LexicalSource
from services.retriever.sources.lexical import lexical_text
from shared.amazon import ItemIn
from tests.retriever.sources.helpers import log

ITEMS = [
    ItemIn(parent_asin="W1", title="Curly lace front wig, natural black", features=["heat resistant fibre"]),
    ItemIn(parent_asin="W2", title="Natural black curly lace wig", features=["heat resistant"]),  # W1's twin
    ItemIn(parent_asin="S1", title="Vitamin C face serum", description=["brightening serum for dull skin"]),
    ItemIn(parent_asin="S2", title="Hyaluronic face serum", store="GlowLab"),
    ItemIn(parent_asin="S3", title="Night cream", store="GlowLab"),
    ItemIn(parent_asin="E0", main_category="All Beauty"),  # no text: a category only
]


def fitted(**params: float) -> LexicalSource:
    source = LexicalSource(**params)  # type: ignore[arg-type]
    source.fit(interactions=log({"u": ["W1", "S1"], "v": ["X9"]}), items=ITEMS)
    return source


def test_is_a_candidate_source() -> None:
    assert isinstance(LexicalSource(), CandidateSource)


def test_text_twin_is_the_best_content_neighbour() -> None:
    top = fitted().candidates(history=["W1"], k=3, exclude={"W1"})
    assert top[0][0] == "W2"
    assert 0 < top[0][1] <= 1.0


def test_user_vector_is_recency_weighted() -> None:
    source = fitted(decay=0.2)
    assert source.candidates(history=["W1", "S1"], k=1, exclude={"W1", "S1"})[0][0] == "S2"
    assert source.candidates(history=["S1", "W1"], k=1, exclude={"W1", "S1"})[0][0] == "W2"


def test_items_without_text_score_nothing() -> None:
    source = fitted()
    got = {a for a, _ in source.candidates(history=["W1", "S1"], k=10, exclude={"W1", "S1"})}
    assert "E0" not in got and "X9" not in got  # category only / reviewed but without metadata
    assert source.candidates(history=["E0", "X9"], k=5) == []


def test_store_is_text_and_category_is_not() -> None:
    assert "GlowLab" in lexical_text(ITEMS[3])
    assert lexical_text(ITEMS[5]) == ""
    assert "All Beauty" in lexical_text(ITEMS[5], category=True)
    source = fitted()
    assert source.candidates(history=["S3"], k=1, exclude={"S3"})[0][0] == "S2"  # same store


def test_a_catalogue_without_text_is_silent() -> None:
    source = LexicalSource()
    source.fit(interactions=log({"u": ["I1", "I2"]}),
               items=[ItemIn(parent_asin=a, main_category="Toys and Games") for a in ("I1", "I2")])
    assert source.matrix is None
    assert source.candidates(history=["I1"], k=5) == []
