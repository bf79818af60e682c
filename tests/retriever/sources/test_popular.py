"""The popular source: popular_by_count behind the candidate-source interface."""
from __future__ import annotations

from services.retriever.sources import CandidateSource, PopularSource
from tests.retriever.sources.helpers import log


def test_popular_source_lists_most_reviewed_first_without_the_seen() -> None:
    source = PopularSource()
    assert isinstance(source, CandidateSource)
    source.fit(interactions=log({"u": ["A", "B"], "v": ["B", "C"], "w": ["B", "A"]}))
    assert source.candidates(history=[], k=3) == [("B", 3.0), ("A", 2.0), ("C", 1.0)]
    assert source.candidates(history=["B"], k=2, exclude={"B"}) == [("A", 2.0), ("C", 1.0)]
