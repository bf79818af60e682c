"""Sources built from stored neighbour lists (the training job's form) equal the fitted ones, and the
ranking core served from them ranks exactly like the in-process fit. Pure logic: no database."""
from __future__ import annotations

import random

import numpy as np
import pytest
import scipy.sparse as sp

from services.retriever.ranking import RankingCore
from services.retriever.sources import CoReviewSource, TransitionSource, with_params
from services.retriever.sources.stored import load_into
from shared.neighbours import COREVIEW, StoredNeighbours, backward_kind, forward_kind
from tests.retriever.ranking.test_core import planted
from tests.retriever.sources.helpers import log
from tests.utils.records import messy_log


def same_matrix(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    a, b = a.tocsr(), b.tocsr()
    a.sort_indices()
    b.sort_indices()
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))  # bit for bit


def noisy_log(seed: int = 3) -> list:
    """The shared messy log (ties in time, repeats, duplicates, an item without any neighbour), plus
    users whose whole sequence is one day."""
    rng = random.Random(seed)
    return messy_log(seed, users=60, items=30) + log(
        {f"t{u}": [f"i{rng.randrange(30):02d}" for _ in range(4)] for u in range(20)}, same_day=True)


def stored_of(interactions: list, *, top: int = 100, windows: tuple[int, ...] = (1, 2),
              transitions_top: int = 0) -> StoredNeighbours:
    co = CoReviewSource(neighbours=top)
    co.fit(interactions=interactions)
    lists = {COREVIEW: co.as_lists()}
    for w in windows:
        tr = TransitionSource(window=w, neighbours=transitions_top or None)
        tr.fit(interactions=interactions)
        lists[forward_kind(w)], lists[backward_kind(w)] = tr.as_lists()
    return StoredNeighbours(version=7, meta={"top": top, "transitions_top": transitions_top}, lists=lists)


@pytest.mark.parametrize("top", [3, 100])
def test_coreview_from_lists_is_the_fitted_matrix(top: int) -> None:
    fitted = CoReviewSource(neighbours=top)
    fitted.fit(interactions=noisy_log())
    built = CoReviewSource.from_lists(fitted.as_lists(), neighbours=top, decay=0.5)
    assert built.index.asins == fitted.index.asins and "solo-item" in built.index.row
    assert same_matrix(built.similarity, fitted.similarity)
    assert built.decay == 0.5
    history = ["i01", "i07", "i03"]
    assert built.candidates(history=history, k=20) == with_params(fitted, decay=0.5).candidates(
        history=history, k=20)


@pytest.mark.parametrize(("window", "top"), [(1, None), (2, None), (2, 2)])
def test_transitions_from_lists_are_the_fitted_matrices(window: int, top: int | None) -> None:
    fitted = TransitionSource(window=window, neighbours=top)
    fitted.fit(interactions=noisy_log())
    forward, backward = fitted.as_lists()
    built = TransitionSource.from_lists(forward=forward, backward=backward, window=window, neighbours=top)
    assert built.index.asins == fitted.index.asins
    assert same_matrix(built.forward, fitted.forward) and same_matrix(built.backward, fitted.backward)
    if top:
        assert max(len(v) for v in forward.values()) <= top
    history = ["i02", "i05"]
    assert built.candidates(history=history, k=30) == fitted.candidates(history=history, k=30)


def test_lists_computed_with_other_settings_are_not_used() -> None:
    stored = stored_of(noisy_log(), top=100, windows=(1,))
    assert load_into(CoReviewSource(neighbours=100), stored)
    assert not load_into(CoReviewSource(neighbours=50), stored)  # other top N
    assert load_into(TransitionSource(window=1), stored)
    assert not load_into(TransitionSource(window=2), stored)  # no window-2 lists
    assert not load_into(TransitionSource(window=1, neighbours=10), stored)  # other truncation
    assert not load_into(object(), stored)


@pytest.fixture(scope="module")
def planted_data() -> tuple[list, list]:
    seqs, items = planted(users=240)
    return log(seqs), items


def test_core_served_from_lists_ranks_like_the_in_process_fit(planted_data: tuple[list, list]) -> None:
    interactions, items = planted_data
    stored = stored_of(interactions)
    kw = {"interactions": interactions, "items": items, "k": 10, "min_queries": 50, "source_folds": 2}
    own = RankingCore.fit(**kw)  # type: ignore[arg-type]
    served = RankingCore.fit(**kw, stored=stored)  # type: ignore[arg-type]
    assert served.report["served_from_lists"] == {"version": 7,
                                                  "sources": ["coreview", "transitions", "transitions_wide"]}
    assert own.report["served_from_lists"] == {"version": None, "sources": []}
    assert served.served_lists_version == 7 and own.served_lists_version is None
    assert served.report["selection"] == own.report["selection"]
    for name in ("coreview",):
        assert same_matrix(served.builder.sources[name].similarity, own.builder.sources[name].similarity)
    for name in ("transitions", "transitions_wide"):
        a, b = served.builder.sources[name], own.builder.sources[name]
        assert same_matrix(a.forward, b.forward) and same_matrix(a.backward, b.backward)
        assert (a.decay, a.backward_weight, a.window) == (b.decay, b.backward_weight, b.window)
    users: dict[str, list[str]] = {}
    for r in interactions:
        users.setdefault(r.user_id, []).append(r.parent_asin)
    for user, history in list(users.items())[:60]:
        assert served.rank(history=history, k=10, exclude=set(history)) == own.rank(
            history=history, k=10, exclude=set(history)), user

    # the reload path: the same core, its sources swapped for the lists' (the model object is kept)
    swapped = own.with_stored(stored)
    assert swapped.model is own.model and swapped.served_lists_version == 7
    for user, history in list(users.items())[:60]:
        assert swapped.rank(history=history, k=10, exclude=set(history)) == own.rank(
            history=history, k=10, exclude=set(history)), user
