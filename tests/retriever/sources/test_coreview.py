"""Co-review neighbours: cosine over who reviewed what, recency-weighted over the user's last items."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from services.retriever.sources import CandidateSource, CoReviewSource, with_params
from services.retriever.sources.coreview import keep_top_per_row
from tests.retriever.sources.helpers import log

# A and B are always reviewed together (the planted pair); C and D likewise; noise items once each.
SEQS = {f"u{i}": ["A", "B", f"n{i}"] for i in range(6)} | {f"v{i}": ["C", "D", f"m{i}"] for i in range(6)}
SEQS |= {"w0": ["A", "C"], "w1": ["B", "D"]}


def fitted(**params: float) -> CoReviewSource:
    source = CoReviewSource(**params)  # type: ignore[arg-type]
    source.fit(interactions=log(SEQS))
    return source


def test_is_a_candidate_source() -> None:
    assert isinstance(CoReviewSource(), CandidateSource)


def test_planted_pair_are_each_others_best_neighbour() -> None:
    source = fitted()
    assert source.neighbours_of("A")[0][0] == "B"
    assert source.neighbours_of("D")[0][0] == "C"
    # cosine: A and B share 6 of their 7 users each
    assert source.neighbours_of("A")[0][1] == pytest.approx(6 / 7)


def test_candidates_exclude_seen_and_follow_the_recent_items() -> None:
    source = fitted(decay=0.1)
    top = source.candidates(history=["C", "A"], k=3, exclude={"C", "A"})
    assert top[0][0] == "B"  # the last item's neighbour outweighs the older one's (decay 0.1)
    assert {"A", "C"}.isdisjoint(a for a, _ in top)
    flat = with_params(source, decay=1.0).candidates(history=["C", "A"], k=2, exclude={"C", "A"})
    assert {a for a, _ in flat} == {"B", "D"}  # decay 1: both history items count the same
    assert all(s > 0 for _, s in top)


def test_unknown_or_empty_history_gives_nothing() -> None:
    source = fitted()
    assert source.candidates(history=[], k=5) == []
    assert source.candidates(history=["never-seen"], k=5) == []


def test_history_length_keeps_only_the_last_items() -> None:
    source = fitted(history_length=1)
    got = {a for a, _ in source.candidates(history=["A", "C"], k=10, exclude={"A", "C"})}
    assert "B" not in got and "D" in got


def test_keep_top_per_row_keeps_n_best_and_breaks_ties_by_column() -> None:
    m = sp.csr_matrix(np.array([[0.0, 0.5, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0]]))
    kept = keep_top_per_row(m, 2).toarray()
    assert kept.tolist() == [[0.0, 0.5, 0.0, 0.9], [0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0]]


def test_neighbours_are_capped() -> None:
    source = fitted(neighbours=1)
    assert int(source.similarity.getnnz(axis=1).max()) == 1
