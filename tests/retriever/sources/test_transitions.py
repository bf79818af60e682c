"""Transitions: "reviewed next after X" (and before), time-ordered with ties by parent_asin."""
from __future__ import annotations

from services.retriever.sources import CandidateSource, TransitionSource, with_params
from tests.retriever.sources.helpers import log

# Everyone who reviews X reviews N right after it (the planted "next" item); P comes before X.
SEQS = {f"u{i}": [f"a{i}", "P", "X", "N", f"z{i}"] for i in range(5)} | {"v": ["N", "Q"], "w": ["Q", "X"]}


def fitted(**params: float) -> TransitionSource:
    source = TransitionSource(**params)  # type: ignore[arg-type]
    source.fit(interactions=log(SEQS))
    return source


def test_is_a_candidate_source() -> None:
    assert isinstance(TransitionSource(), CandidateSource)


def test_planted_next_item_is_recovered() -> None:
    source = fitted()
    assert source.next_of("X")[0] == ("N", 5 / 5)  # every X is followed by N
    top = source.candidates(history=["Q", "X"], k=3, exclude={"Q", "X"})
    assert top[0][0] == "N"


def test_backward_transitions_point_to_what_came_before() -> None:
    source = fitted(forward_weight=0.0, backward_weight=1.0)
    top = source.candidates(history=["X"], k=2, exclude={"X"})
    assert top[0][0] == "P"
    only_forward = with_params(source, forward_weight=1.0, backward_weight=0.0)
    assert "P" not in {a for a, _ in only_forward.candidates(history=["X"], k=5, exclude={"X"})}


def test_ties_in_time_are_ordered_by_parent_asin() -> None:
    # All on one day: the order is by asin, as tools/evaluation/split.py orders it: B -> C -> D.
    source = TransitionSource()
    source.fit(interactions=log({"u": ["D", "B", "C"]}, same_day=True))
    assert [a for a, _ in source.next_of("B")] == ["C"]
    assert [a for a, _ in source.next_of("C")] == ["D"]
    assert source.next_of("D") == []


def test_decay_weights_the_last_item_most() -> None:
    source = fitted(decay=0.1, backward_weight=0.0)
    # history ends with P: P -> X (weight 1) outweighs X -> N from the older item (weight 0.1)
    assert source.candidates(history=["X", "P"], k=2, exclude={"P"}) == [("X", 1.0), ("N", 0.1)]
    assert source.candidates(history=["P", "X"], k=1, exclude={"X", "P"})[0][0] == "N"


def test_repeats_are_not_transitions() -> None:
    source = TransitionSource()
    source.fit(interactions=log({"u": ["A", "A", "B"]}))
    assert [a for a, _ in source.next_of("A")] == ["B"]
