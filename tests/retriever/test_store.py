"""Index snapshots on disk: versions, the manifest, pruning, what a reload restores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.retriever.index import IndexConfig, IndexSnapshot
from services.retriever.store import SnapshotStore
from tests.retriever.test_index import DIM, _items


def test_snapshot_round_trip_and_manifest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "index", keep=2)
    assert store.load(config=IndexConfig()) is None
    snap = IndexSnapshot.build(
        _items(50), dim=DIM, model_name="m", config=IndexConfig(), db_state={"items": 50}
    )
    saved = [store.save(snap) for _ in range(4)]
    assert [s.version for s in saved] == [1, 2, 3, 4]
    loaded = store.load(config=IndexConfig())
    assert loaded is not None and loaded.version == 4
    assert loaded.fingerprint == snap.fingerprint and loaded.db_state == {"items": 50}
    assert np.array_equal(loaded.vectors, snap.vectors) and loaded.hashes == snap.hashes
    assert loaded.search(snap.vectors[3], 1)[0][0] == "I3"
    assert json.loads((tmp_path / "index" / "manifest.json").read_text())["version"] == 4
    kept = sorted(p.name for p in (tmp_path / "index").glob("v*"))
    assert kept == ["v0000000003", "v0000000004"]  # older snapshots pruned
    assert not list((tmp_path / "index").glob(".tmp-*"))


def test_hnsw_snapshot_keeps_dead_slots_and_search_params(tmp_path: Path) -> None:
    config = IndexConfig(kind="hnsw", hnsw_ef_search=300)
    snap = IndexSnapshot.build(_items(60), dim=DIM, model_name="m", config=config)
    snap = snap.with_updates(_items(3, seed=5), config=config)
    store = SnapshotStore(tmp_path)
    store.save(snap)
    loaded = store.load(config=config)
    assert loaded is not None and loaded.kind == "hnsw" and loaded.dead_in_index == 3
    import faiss

    assert faiss.downcast_index(loaded.index.index).hnsw.efSearch == 300
    assert len({a for a, _ in loaded.search(snap.vectors[0], 60)}) == 60
