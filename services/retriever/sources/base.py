"""The one interface every candidate source implements, and the helpers they share.

A source is fitted once from the training interactions (and the item metadata, for content), then
asked for a user's candidates from that user's history: the items they reviewed, oldest first.
Sources are pure numpy/scipy: no database, no HTTP; the retriever and the offline evaluation call the
same objects. Scores are the source's own scale (a cosine, a transition probability, a count); only
positive scores are returned, best first, ties broken by ``parent_asin`` like every ranking here.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import scipy.sparse as sp

from shared.records import get_field

Candidates = list[tuple[str, float]]
S = TypeVar("S")


class InteractionRecord(Protocol):
    """What a source reads of one review (``tools.evaluation.split.Interaction``, an ORM row...)."""

    @property
    def user_id(self) -> str: ...
    @property
    def parent_asin(self) -> str: ...
    @property
    def rating(self) -> float: ...
    @property
    def timestamp(self) -> int: ...


@runtime_checkable
class CandidateSource(Protocol):
    """``fit`` once on the training interactions, then ``candidates`` per user."""

    name: str

    def fit(self, *, interactions: Sequence[Any], items: Iterable[Any] = ()) -> None:
        """Learn from ``interactions`` (time order; records or dicts with user_id, parent_asin, rating,
        timestamp) and ``items`` (metadata objects with ``parent_asin``; only content sources read them)."""
        ...

    def candidates(self, *, history: Sequence[str], k: int, exclude: Container[str] = ()) -> Candidates:
        """Up to ``k`` ``(parent_asin, score)`` with score > 0, best first, none of ``exclude``.

        ``history``: the user's items, oldest first (an empty history gets what the source has for
        nobody: usually nothing)."""
        ...


def with_params(source: S, **params: Any) -> S:
    """A copy of a fitted source with other scoring parameters (decay, history length, weights).

    The fitted matrices are shared, not copied, so trying a grid of decays costs no refit."""
    out = copy.copy(source)
    for key, value in params.items():
        if not hasattr(out, key):
            raise AttributeError(f"{type(source).__name__} has no parameter {key!r}")
        setattr(out, key, value)
    return out


def order_key(record: Any) -> tuple[int, str, float]:
    """A user's reviews in time order, ties by ``parent_asin`` then rating (as the evaluation splits)."""
    return (int(get_field(record, "timestamp", 0)), str(get_field(record, "parent_asin")),
            float(get_field(record, "rating", 0.0)))


def user_sequences(interactions: Iterable[Any]) -> dict[str, list[str]]:
    """Each user's items in :func:`order_key` order (repeats kept: a sequence is what happened)."""
    by_user: dict[str, list[Any]] = defaultdict(list)
    for r in interactions:
        by_user[str(get_field(r, "user_id"))].append(r)
    return {u: [str(get_field(r, "parent_asin")) for r in sorted(rs, key=order_key)]
            for u, rs in sorted(by_user.items())}


class ItemIndex:
    """Items in ``parent_asin`` order, so that ties broken by index are ties broken by asin."""

    def __init__(self, asins: Iterable[str]) -> None:
        self.asins: list[str] = sorted(set(asins))
        self.row: dict[str, int] = {a: n for n, a in enumerate(self.asins)}

    def __len__(self) -> int:
        return len(self.asins)

    def rows(self, asins: Iterable[str]) -> list[int]:
        """Rows of the known items among ``asins``, in their order (unknown ones skipped)."""
        return [self.row[a] for a in asins if a in self.row]


def recent_rows(index: ItemIndex, history: Sequence[str], *, length: int, decay: float,
                ) -> tuple[list[int], np.ndarray]:
    """Rows of the user's last ``length`` known items and their weights ``decay ** steps_from_end``."""
    rows = index.rows(history)[-length:] if length > 0 else []
    steps = np.arange(len(rows) - 1, -1, -1, dtype=np.float64)
    return rows, np.power(float(decay), steps)


def weighted_rows(matrix: sp.csr_matrix, rows: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """``sum_i weights[i] * matrix[rows[i]]`` as a dense vector over the columns: the same sums as
    ``matrix[rows].T @ weights``, read straight from the CSR arrays (scipy's fancy row indexing costs
    ~0.1 ms a call, most of a source's time per request)."""
    indptr = matrix.indptr
    rows_a = np.asarray(rows, dtype=np.int64)
    starts, ends = indptr[rows_a], indptr[rows_a + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(matrix.shape[1], dtype=np.float64)
    # positions of every stored entry of the chosen rows, row after row
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
    values = matrix.data[offsets] * np.repeat(np.asarray(weights, dtype=np.float64), lengths)
    return np.bincount(matrix.indices[offsets], weights=values, minlength=matrix.shape[1])


class ScoredSource:
    """A source that scores every item of ``self.index`` (``scores(history)``, None when it knows
    nothing of the history): its candidates are the best positive scores. Subclasses set ``index`` in
    ``fit`` and implement ``scores``."""

    index: ItemIndex

    def scores(self, history: Sequence[str]) -> np.ndarray | None:
        raise NotImplementedError

    def candidates(self, *, history: Sequence[str], k: int, exclude: Container[str] = ()) -> Candidates:
        s = self.scores(history)
        return [] if s is None else top_positive(s, self.index, k=k, exclude=exclude)


def matrix_from_lists(index: ItemIndex, lists: Mapping[str, Sequence[tuple[str, float]]]) -> sp.csr_matrix:
    """The item x item matrix whose row ``a`` holds ``lists[a]`` (``(asin, score)`` pairs, any order);
    rows and columns follow ``index``, pairs naming an item outside it are dropped."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for asin, pairs in lists.items():
        r = index.row.get(asin)
        if r is None:
            continue
        for other, score in pairs:
            c = index.row.get(other)
            if c is not None:
                rows.append(r)
                cols.append(c)
                vals.append(float(score))
    n = len(index)
    out = sp.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)), shape=(n, n))
    out.sort_indices()
    return out


def matrix_lists(matrix: Any, index: ItemIndex) -> dict[str, list[tuple[str, float]]]:
    """Every row of an item x item matrix as ``asin -> [(asin, score), ...]`` best first, ties by asin
    (the stored form of ``shared.neighbours``; empty rows included)."""
    matrix = matrix.tocsr()
    out: dict[str, list[tuple[str, float]]] = {}
    for r, asin in enumerate(index.asins):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        cols, data = matrix.indices[start:end], matrix.data[start:end]
        order = np.lexsort((cols, -data))
        out[asin] = [(index.asins[int(cols[i])], float(data[i])) for i in order if data[i] != 0]
    return out


def row_candidates(matrix: Any, index: ItemIndex, asin: str, k: int) -> Candidates:
    """The best positive entries of ``asin``'s row of an item x item matrix (unknown item: none)."""
    row = index.row.get(asin)
    if row is None:
        return []
    return top_positive(matrix[row].toarray().ravel(), index, k=k)


def top_positive(scores: np.ndarray, index: ItemIndex, *, k: int, exclude: Container[str] = ()) -> Candidates:
    """The ``k`` best positive scores as ``(asin, score)``, ties by asin, without ``exclude``."""
    if k <= 0:
        return []
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.flatnonzero(scores > 0)
    if positive.size == 0:
        return []
    # A few more than k, so that excluded items do not leave the list short.
    n_ex = sum(1 for a in exclude if a in index.row) if isinstance(exclude, set | frozenset | dict) else None
    want = k + (n_ex if n_ex is not None else positive.size)
    if positive.size > want:
        part = np.argpartition(-scores[positive], want - 1)[:want]
        kth = scores[positive[part]].min()
        positive = positive[scores[positive] >= kth]  # keep every tie of the cut-off score
    order = positive[np.lexsort((positive, -scores[positive]))]
    out: Candidates = []
    for i in order:
        asin = index.asins[int(i)]
        if asin in exclude:
            continue
        out.append((asin, float(scores[i])))
        if len(out) == k:
            break
    return out
