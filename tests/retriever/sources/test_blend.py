"""The weighted blend: normalised per source, summed with weights, filled from the fallback."""
from __future__ import annotations

import pytest

from services.retriever.sources import CoReviewSource, PopularSource, TransitionSource, WeightedBlend
from services.retriever.sources.blend import normalise
from tests.retriever.sources.helpers import log

SEQS = {f"u{i}": ["A", "B", "C"] for i in range(4)} | {"v": ["D", "E"], "w": ["E", "F"], "x": ["F", "G"]}


@pytest.fixture(scope="module")
def parts() -> tuple[CoReviewSource, TransitionSource, PopularSource]:
    data = log(SEQS)
    co, tr, pop = CoReviewSource(), TransitionSource(), PopularSource()
    for s in (co, tr, pop):
        s.fit(interactions=data)
    return co, tr, pop


def test_normalise_by_max_and_by_rank() -> None:
    assert normalise([("a", 4.0), ("b", 1.0)], "max") == [("a", 1.0), ("b", 0.25)]
    assert normalise([("a", 4.0), ("b", 1.0)], "rank") == [("a", 1.0), ("b", 0.5)]
    with pytest.raises(ValueError):
        normalise([("a", 1.0)], "zscore")


def test_one_weight_is_that_source_alone_then_the_fallback(parts: tuple) -> None:
    co, _, pop = parts
    blend = WeightedBlend(sources={"coreview": co}, weights={"coreview": 1.0}, fallback=pop)
    got = blend.rank(history=["A"], k=6, exclude={"A"})
    alone = co.candidates(history=["A"], k=6, exclude={"A"})
    assert got[:len(alone)] == [(a, s / alone[0][1]) for a, s in alone]
    assert len(got) == 6 and len({a for a, _ in got}) == 6 and "A" not in {a for a, _ in got}
    assert all(s == 0.0 for _, s in got[len(alone):])  # the popular fill


def test_weights_mix_sources_and_zero_weight_drops_one(parts: tuple) -> None:
    co, tr, pop = parts
    both = WeightedBlend(sources={"coreview": co, "transitions": tr},
                         weights={"coreview": 1.0, "transitions": 1.0}, fallback=pop)
    only_tr = WeightedBlend(sources={"coreview": co, "transitions": tr},
                            weights={"coreview": 0.0, "transitions": 1.0}, fallback=pop)
    # after B: co-review says A and C, transitions say C (next) and A (before, half weight)
    assert both.blended(history=["B"], exclude={"B"})[0][0] == "C"
    assert [a for a, _ in only_tr.blended(history=["B"], exclude={"B"})] == ["C", "A"]


def test_cold_history_gets_the_fallback_only(parts: tuple) -> None:
    co, _, pop = parts
    blend = WeightedBlend(sources={"coreview": co}, weights={"coreview": 1.0}, fallback=pop)
    assert blend.rank(history=[], k=3) == [(a, 0.0) for a, _ in pop.candidates(k=3)]


def test_unknown_weights_are_refused(parts: tuple) -> None:
    co, _, _ = parts
    with pytest.raises(ValueError):
        WeightedBlend(sources={"coreview": co}, weights={"lexical": 1.0})
