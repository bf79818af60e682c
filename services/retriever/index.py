"""The item vector index: an immutable FAISS snapshot with copy-on-write updates.

* Vectors are unit-normalized, so inner product = cosine. ``flat`` (exact ``IndexFlatIP``) is the
  default; ``hnsw`` and ``ivf`` are for large catalogs. Flat and HNSW sit in an ``IndexIDMap2``
  (IVF carries ids natively); the int64 ids are *slots*; ``slot_asin[slot]`` maps back to the
  parent_asin.
* An update never mutates a snapshot that readers may hold: :meth:`IndexSnapshot.with_updates`
  clones the FAISS index and the arrays and returns a new snapshot. A replaced item gets a fresh
  slot; the old slot is removed from flat/IVF indexes and left dead in HNSW (which cannot remove),
  where searches over-fetch by the number of dead slots. Past 25% dead slots the snapshot is
  rebuilt compactly.
* Persisting snapshots (versioned directories and the manifest) is :mod:`services.retriever.store`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "flat_fp16", "hnsw", "ivf"]
COMPACT_DEAD_FRACTION = 0.25


class SnapshotError(RuntimeError):
    """A snapshot cannot be built, loaded or does not fit the configured model."""


@dataclass(frozen=True, slots=True)
class IndexConfig:
    kind: IndexKind = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32

    @classmethod
    def from_settings(cls, s: Any) -> IndexConfig:
        return cls(
            kind=s.RETRIEVER_INDEX_KIND,
            hnsw_m=s.RETRIEVER_HNSW_M,
            hnsw_ef_construction=s.RETRIEVER_HNSW_EF_CONSTRUCTION,
            hnsw_ef_search=s.RETRIEVER_HNSW_EF_SEARCH,
            ivf_nlist=s.RETRIEVER_IVF_NLIST,
            ivf_nprobe=s.RETRIEVER_IVF_NPROBE,
        )


@dataclass(frozen=True, slots=True)
class ItemVector:
    """One embedded item: its text vector, its title vector and the hash of what was embedded."""

    parent_asin: str
    content_hash: str
    vector: np.ndarray
    title_vector: np.ndarray


_search_threads = 0  # 0: OpenMP's default (all cores)
_omp_local = threading.local()


def set_search_threads(threads: int) -> None:
    """Single-query searches gain nothing from OpenMP and lose a lot to it on busy, small machines.

    OpenMP's thread count is per calling thread: set in a worker thread, it leaves the event loop's
    thread (where the service searches) at the default. So the setting is recorded here and applied
    by :func:`apply_search_threads` in whichever thread searches, once per thread.
    """
    global _search_threads
    _search_threads = max(0, threads)
    apply_search_threads()


def apply_search_threads() -> None:
    if _search_threads > 0 and getattr(_omp_local, "threads", None) != _search_threads:
        faiss.omp_set_num_threads(_search_threads)
        _omp_local.threads = _search_threads


def item_fingerprint(parent_asin: str, content_hash: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{parent_asin}\x1f{content_hash}".encode()).digest()[:8], "little")


def new_faiss_index(config: IndexConfig, dim: int, train: np.ndarray) -> faiss.Index:
    if config.kind == "flat":
        inner: faiss.Index = faiss.IndexFlatIP(dim)
    elif config.kind == "flat_fp16":
        # exhaustive like flat, over half-precision codes: half the memory traffic per query (a flat
        # scan is memory-bound), scores exact to ~1e-3
        inner = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    elif config.kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = config.hnsw_ef_construction
        inner.hnsw.efSearch = config.hnsw_ef_search
    elif config.kind == "ivf":
        # ~39 training points per list is FAISS's minimum; shrink nlist for small catalogs.
        nlist = max(1, min(config.ivf_nlist, len(train) // 39))
        quantizer = faiss.IndexFlatIP(dim)
        inner = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        if len(train):
            inner.train(np.ascontiguousarray(train, dtype=np.float32))
        inner.nprobe = min(config.ivf_nprobe, nlist)
        # IVF stores ids itself and removes by id without renumbering; IndexIDMap2.remove_ids
        # assumes renumbering (true of flat storage only) and would corrupt the id map.
        return inner
    else:
        raise SnapshotError(f"unknown index kind {config.kind!r}")
    return faiss.IndexIDMap2(inner)


def tune_index(index: faiss.Index, config: IndexConfig) -> None:
    """Search-time parameters are not all persisted by write_index; set them after every load."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = config.hnsw_ef_search
    elif isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(config.ivf_nprobe, inner.nlist)


def _inner(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index


def index_kind(index: faiss.Index) -> IndexKind:
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    if isinstance(inner, faiss.IndexScalarQuantizer):
        return "flat_fp16"
    return "flat"


def _ivf_trained_for(index: faiss.Index) -> int:
    inner = _inner(index)
    return int(inner.nlist) if isinstance(inner, faiss.IndexIVF) and inner.is_trained else 0


@dataclass(frozen=True, eq=False)
class IndexSnapshot:
    """An immutable item index; share it freely between threads (FAISS search is read-only)."""

    index: Any  # faiss.IndexIDMap2
    slot_asin: tuple[str | None, ...]
    vectors: np.ndarray  # (n_slots, dim) item-text vectors, row = slot
    title_vectors: np.ndarray  # (n_slots, dim) title-only vectors (llm_only stage 1)
    hashes: dict[str, str]  # parent_asin -> content_hash embedded
    asin_slot: dict[str, int]
    model_name: str
    dim: int
    kind: IndexKind
    fingerprint: int = 0  # XOR of per-item fingerprints: order-free, updatable in O(changes)
    version: int = 0  # 0 = not persisted yet
    dead_in_index: int = 0  # dead slots still inside the FAISS index (HNSW only)
    db_state: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    derived: dict[Any, Any] = field(default_factory=dict)  # memo for data derived from this snapshot

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, *, dim: int, model_name: str, config: IndexConfig) -> IndexSnapshot:
        return cls.build([], dim=dim, model_name=model_name, config=config)

    @classmethod
    def build(
        cls,
        items: Sequence[ItemVector],
        *,
        dim: int,
        model_name: str,
        config: IndexConfig,
        db_state: dict[str, Any] | None = None,
    ) -> IndexSnapshot:
        """A compact snapshot of ``items`` (later duplicates of a parent_asin win)."""
        latest: dict[str, ItemVector] = {}
        for it in items:
            latest[it.parent_asin] = it
        rows = list(latest.values())
        vectors = _stack([r.vector for r in rows], dim)
        titles = _stack([r.title_vector for r in rows], dim)
        index = new_faiss_index(config, dim, vectors)
        if len(rows):
            index.add_with_ids(vectors, np.arange(len(rows), dtype=np.int64))
        fp = 0
        for r in rows:
            fp ^= item_fingerprint(r.parent_asin, r.content_hash)
        return cls(
            index=index,
            slot_asin=tuple(r.parent_asin for r in rows),
            vectors=vectors,
            title_vectors=titles,
            hashes={r.parent_asin: r.content_hash for r in rows},
            asin_slot={r.parent_asin: i for i, r in enumerate(rows)},
            model_name=model_name,
            dim=dim,
            kind=config.kind,
            fingerprint=fp,
            db_state=dict(db_state or {}),
        )

    def with_updates(
        self,
        updates: Sequence[ItemVector],
        *,
        removals: Sequence[str] = (),
        config: IndexConfig,
        db_state: dict[str, Any] | None = None,
    ) -> IndexSnapshot:
        """A new snapshot with ``updates`` added or replaced and ``removals`` gone; self is untouched."""
        latest: dict[str, ItemVector] = {}
        for it in updates:
            if it.vector.shape != (self.dim,) or it.title_vector.shape != (self.dim,):
                raise SnapshotError(
                    f"vector of {it.parent_asin} has shape {it.vector.shape}, index dim {self.dim}"
                )
            latest[it.parent_asin] = it
        gone = {a for a in removals if a in self.asin_slot and a not in latest}
        state = self.db_state if db_state is None else db_state
        if not latest and not gone and config.kind == self.kind:
            return self._replace(db_state=dict(state))
        dead_slots = [self.asin_slot[a] for a in (*latest, *gone) if a in self.asin_slot]
        n_dead = sum(1 for a in self.slot_asin if a is None) + len(dead_slots)
        n_slots = len(self.slot_asin) + len(latest)
        ivf_too_small = config.kind == "ivf" and _ivf_trained_for(self.index) * 39 * 4 < n_slots - n_dead
        if (
            config.kind != self.kind
            or n_dead > COMPACT_DEAD_FRACTION * n_slots
            or (config.kind == "ivf" and ivf_too_small)
        ):
            live = [
                ItemVector(a, self.hashes[a], self.vectors[s], self.title_vectors[s])
                for s, a in enumerate(self.slot_asin)
                if a is not None and a not in latest and a not in gone
            ]
            return IndexSnapshot.build(
                [*live, *latest.values()],
                dim=self.dim,
                model_name=self.model_name,
                config=config,
                db_state=state,
            )

        index = faiss.clone_index(self.index)
        tune_index(index, config)
        dead_in_index = self.dead_in_index
        if dead_slots:
            if self.kind == "hnsw":
                dead_in_index += len(dead_slots)  # HNSW cannot remove: filtered at search time
            else:
                index.remove_ids(np.asarray(dead_slots, dtype=np.int64))  # type: ignore[arg-type]
        start = len(self.slot_asin)
        new_rows = list(latest.values())
        ids = np.arange(start, start + len(new_rows), dtype=np.int64)
        vectors = np.concatenate([self.vectors, _stack([r.vector for r in new_rows], self.dim)])
        titles = np.concatenate([self.title_vectors, _stack([r.title_vector for r in new_rows], self.dim)])
        if new_rows:
            index.add_with_ids(vectors[start:], ids)
        slot_asin = list(self.slot_asin)
        asin_slot = dict(self.asin_slot)
        hashes = dict(self.hashes)
        fp = self.fingerprint
        for s in dead_slots:
            asin = slot_asin[s]
            assert asin is not None
            fp ^= item_fingerprint(asin, hashes.pop(asin))
            del asin_slot[asin]
            slot_asin[s] = None
        for slot, r in zip(ids.tolist(), new_rows, strict=True):
            slot_asin.append(r.parent_asin)
            asin_slot[r.parent_asin] = slot
            hashes[r.parent_asin] = r.content_hash
            fp ^= item_fingerprint(r.parent_asin, r.content_hash)
        return IndexSnapshot(
            index=index,
            slot_asin=tuple(slot_asin),
            vectors=vectors,
            title_vectors=titles,
            hashes=hashes,
            asin_slot=asin_slot,
            model_name=self.model_name,
            dim=self.dim,
            kind=self.kind,
            fingerprint=fp,
            dead_in_index=dead_in_index,
            db_state=dict(state),
        )

    def with_version(self, version: int) -> IndexSnapshot:
        """This snapshot under the version the store persisted it as."""
        return self._replace(version=version)

    def _replace(self, **changes: Any) -> IndexSnapshot:
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "derived"}
        fields.update(changes)
        return IndexSnapshot(**fields)

    # ---- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.asin_slot)

    def __contains__(self, parent_asin: object) -> bool:
        return parent_asin in self.asin_slot

    @property
    def version_label(self) -> str:
        return f"{self.version}-{self.fingerprint:016x}"

    def vector(self, parent_asin: str) -> np.ndarray | None:
        slot = self.asin_slot.get(parent_asin)
        return None if slot is None else self.vectors[slot]

    def vectors_for(self, asins: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Vectors of the given items that are in the index, in order; unknown ones are skipped."""
        known = [a for a in asins if a in self.asin_slot]
        rows = np.asarray([self.asin_slot[a] for a in known], dtype=np.int64)
        return known, (self.vectors[rows] if len(rows) else np.zeros((0, self.dim), np.float32))

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Top-k live items by inner product with ``query`` (a unit vector), as (parent_asin, score)."""
        slots, scores = self.search_slots(query, k)
        return [
            (str(self.slot_asin[slot]), score) for slot, score in zip(slots.tolist(), scores.tolist(), strict=True)
        ]

    def search_slots(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots, scores) of the top-k live items by inner product, as arrays (no per-hit Python)."""
        if not self.asin_slot or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise SnapshotError(f"query dim {q.shape[1]} != index dim {self.dim}")
        fetch = min(k + self.dead_in_index, self.index.ntotal)
        apply_search_threads()
        scores, ids = self.index.search(q, fetch)
        ids, scores = ids[0], scores[0]
        valid = ids >= 0
        valid[valid] = self.live_mask()[ids[valid]]
        return ids[valid][:k].astype(np.int64, copy=False), scores[valid][:k]

    def slots_of(self, asins: Iterable[str]) -> np.ndarray:
        """Slots of the given items that are in the index (unknown ones skipped), in order."""
        get = self.asin_slot.get
        return np.asarray([s for a in asins if (s := get(a)) is not None], dtype=np.int64)

    def live_mask(self) -> np.ndarray:
        """Boolean per slot: True where the slot holds a live item."""
        key = "live_mask"
        if key not in self.derived:
            self.derived[key] = np.asarray([a is not None for a in self.slot_asin], dtype=bool)
        return self.derived[key]


def _stack(vecs: Sequence[np.ndarray], dim: int) -> np.ndarray:
    if not vecs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.vstack(vecs), dtype=np.float32)
