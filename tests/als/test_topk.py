"""Exact top-k for many users (FAISS + de-duplication) against a plain full sort."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from services.als import topk
from services.als.topk import batched_topk


def _brute(U, V, bias, seen, users, n):
    out = {}
    for u in users:
        scores = U[u] @ V.T + bias
        if seen is not None:
            scores[seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = -np.inf
        order = np.argsort(-scores, kind="stable")[:n]
        out[int(u)] = scores[order]
    return out


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    n_users, n_items, rank = 400, 300, 6
    U = rng.normal(size=(n_users, rank)).astype(np.float32)
    U[100:200] = U[100]  # many identical users (the ALS single-rating case) ...
    V = rng.normal(size=(n_items, rank)).astype(np.float32)
    bias = rng.normal(scale=0.5, size=n_items).astype(np.float32)
    rows, cols = [], []
    for u in range(n_users):
        k = 1 if u < 300 else int(rng.integers(2, 60))  # ... and a tail of heavy users
        items = [7] if 100 <= u < 150 else rng.choice(n_items, size=k, replace=False)  # half share a seen item
        rows += [u] * len(items)
        cols += list(items)
    seen = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))
    return U, V, bias, seen


def test_matches_a_full_sort_and_never_returns_seen_items(problem, monkeypatch) -> None:
    U, V, bias, seen = problem
    monkeypatch.setattr(topk, "SEEN_FOR_FAISS", 20)  # exercise both the FAISS and the numpy paths
    users = np.arange(len(U))
    want = _brute(U, V, bias, seen, users, 25)
    got = 0
    for block, idx, vals in batched_topk(U, V, users, 25, item_bias=bias, seen=seen, block_size=64):
        for u, row, v in zip(block, idx, vals, strict=True):
            got += 1
            np.testing.assert_allclose(v, want[int(u)], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(U[u] @ V[row].T + bias[row], v, rtol=1e-5, atol=1e-5)
            assert not set(row.tolist()) & set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
    assert got == len(U)


def test_pads_when_fewer_unseen_items_than_n() -> None:
    U = np.eye(3, dtype=np.float32)
    V = np.eye(3, dtype=np.float32)
    seen = sparse.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=np.float32))
    rows = {
        int(u): (i, v)
        for block, idx, vals in batched_topk(U, V, np.arange(3), 3, seen=seen)
        for u, i, v in zip(block, idx, vals, strict=True)
    }
    assert rows[0][0].tolist() == [2, -1, -1] and np.isneginf(rows[0][1][1:]).all()
    assert rows[1][0][0] == 1 and (rows[1][0] >= 0).all()
    assert rows[2][0].tolist() == [-1, -1, -1]


def test_without_seen_matrix_everything_is_eligible() -> None:
    rng = np.random.default_rng(1)
    U, V = rng.normal(size=(50, 4)).astype(np.float32), rng.normal(size=(80, 4)).astype(np.float32)
    want = _brute(U, V, np.zeros(80, np.float32), None, range(50), 10)
    for block, _, vals in batched_topk(U, V, np.arange(50), 10):
        for u, v in zip(block, vals, strict=True):
            np.testing.assert_allclose(v, want[int(u)], rtol=1e-5, atol=1e-5)
