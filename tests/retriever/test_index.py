"""The FAISS snapshot: add/replace/remove by id, kinds, swaps under concurrent reads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from services.retriever.index import IndexConfig, IndexSnapshot, ItemVector

DIM = 32


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _items(n: int, seed: int = 0, prefix: str = "I") -> list[ItemVector]:
    rng = np.random.default_rng(seed)
    vecs, titles = _unit(rng, n), _unit(rng, n)
    return [ItemVector(f"{prefix}{i}", f"h{i}", vecs[i], titles[i]) for i in range(n)]


@pytest.mark.parametrize("kind", ["flat", "flat_fp16", "hnsw", "ivf"])
def test_each_kind_finds_an_item_by_its_own_vector(kind: str) -> None:
    items = _items(400)
    snap = IndexSnapshot.build(items, dim=DIM, model_name="m", config=IndexConfig(kind=kind, ivf_nprobe=64))
    assert len(snap) == 400 and snap.kind == kind
    hits = sum(snap.search(it.vector, 1)[0][0] == it.parent_asin for it in items[:50])
    assert hits >= 48  # approximate kinds may miss a rare one


@pytest.mark.parametrize("kind", ["flat", "flat_fp16", "hnsw", "ivf"])
def test_replace_and_remove_are_copy_on_write(kind: str) -> None:
    config = IndexConfig(kind=kind)
    base = IndexSnapshot.build(_items(100), dim=DIM, model_name="m", config=config)
    new_vec = _unit(np.random.default_rng(9), 1)[0]
    updated = base.with_updates(
        [ItemVector("I5", "h5-new", new_vec, new_vec)], removals=["I7"], config=config
    )
    # the new snapshot serves the new vector, under the same parent_asin, without the removed item
    assert np.allclose(updated.vector("I5"), new_vec) and updated.hashes["I5"] == "h5-new"
    assert updated.search(new_vec, 1)[0][0] == "I5"
    assert "I7" not in updated and len(updated) == 99
    assert all(a != "I7" for a, _ in updated.search(base.vector("I7"), 100))  # type: ignore[arg-type]
    # ... and never returns I5 twice (the old slot is dead)
    assert [a for a, _ in updated.search(new_vec, 99)].count("I5") == 1
    # the old snapshot is untouched: readers holding it see a consistent index
    assert not np.allclose(base.vector("I5"), new_vec) and "I7" in base and len(base) == 100
    assert base.fingerprint != updated.fingerprint


def test_hnsw_dead_slots_are_compacted() -> None:
    config = IndexConfig(kind="hnsw")
    snap = IndexSnapshot.build(_items(40), dim=DIM, model_name="m", config=config)
    for round_ in range(4):  # replace 5 items per round: dead slots pile up, then a rebuild clears them
        snap = snap.with_updates(_items(5, seed=100 + round_), config=config)
        assert len(snap) == 40
    assert snap.dead_in_index < 0.25 * len(snap.slot_asin) + 5
    assert len(snap.search(snap.vector("I0"), 40)) == 40  # type: ignore[arg-type]


def test_concurrent_queries_during_swaps_never_fail() -> None:
    """Readers take one reference per query; a writer swaps new snapshots in the meantime."""
    config = IndexConfig()
    holder = {"snap": IndexSnapshot.build(_items(300), dim=DIM, model_name="m", config=config)}
    errors: list[BaseException] = []
    queries = 0
    stop = threading.Event()
    rng = np.random.default_rng(1)
    qs = _unit(rng, 64)

    def reader() -> None:
        nonlocal queries
        i = 0
        while not stop.is_set():
            snap = holder["snap"]
            try:
                hits = snap.search(qs[i % 64], 50)
                assert len(hits) == 50
                assert all(a in snap for a, _ in hits)  # every answer belongs to the snapshot queried
                queries += 1
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)
                return
            i += 1

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for round_ in range(30):
        upd = _items(20, seed=1000 + round_, prefix=f"R{round_}-")
        removals = list(holder["snap"].asin_slot)[:10]
        holder["snap"] = holder["snap"].with_updates(upd, removals=removals, config=config)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert queries > 30
    assert len(holder["snap"]) == 300 + 30 * 10


def test_search_threads_apply_in_the_thread_that_searches() -> None:
    """OpenMP's thread count is per thread: the service sets it at start-up in a worker thread but
    searches on the event loop's thread, which must not stay at the default (all cores)."""
    import faiss

    from services.retriever import index as index_mod

    items = _items(50)
    snap = IndexSnapshot.build(items, dim=DIM, model_name="m", config=IndexConfig(kind="flat"))
    seen: list[int] = []
    try:
        setter = threading.Thread(target=index_mod.set_search_threads, args=(1,))
        setter.start()
        setter.join()

        def search_and_report() -> None:
            snap.search(items[0].vector, 5)
            seen.append(faiss.omp_get_max_threads())

        searcher = threading.Thread(target=search_and_report)  # a fresh thread: OpenMP default there
        searcher.start()
        searcher.join()
    finally:
        index_mod._search_threads = 0
    assert seen == [1]
