"""Per-item neighbour lists of a model version: what the Spark training job writes, the retriever reads.

The ALS training job (``services.als.neighbours``) computes, from the reviews it trains on, each
item's co-review neighbours and its forward / backward transitions, and stores them per model version
(``item_neighbours``: one row per (version, kind, parent_asin), ``neighbours`` = ``[[asin, score],
...]`` best first, ties by asin). The rows are written while the version is still ``training``, so the
status flip that makes the model live makes its lists live too. The retriever builds its served
co-review and transition sources from the live version's lists when they were computed on exactly the
reviews it has (:func:`interactions_fingerprint` of both sides agree); otherwise it fits them itself.

Kinds: ``coreview`` (cosine over the binary user x item matrix), ``forward.w<W>`` / ``backward.w<W>``
("reviewed next / before", pairs up to ``W`` steps apart, row-normalised). Describing metadata (the
fingerprint, the top-N kept, the windows, row and pair counts) is in the version's
``metrics["neighbours"]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select

from shared.db import read_connection
from shared.models import AlsModel, ItemNeighbours

COREVIEW = "coreview"
METRICS_KEY = "neighbours"

NeighbourList = list[tuple[str, float]]


def forward_kind(window: int) -> str:
    return f"forward.w{int(window)}"


def backward_kind(window: int) -> str:
    return f"backward.w{int(window)}"


def interactions_fingerprint(rows: Iterable[tuple[Any, Any, Any]]) -> str:
    """An order-independent digest of ``(user_id, parent_asin, timestamp)`` rows (repeats count).

    The training job takes it of the reviews it computed the lists from, the retriever of the reviews
    it fits on; equal digests mean the stored lists are what an in-process fit would compute."""
    lines = sorted(f"{u}\x1f{a}\x1f{int(t)}" for u, a, t in rows)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return f"{len(lines)}:{digest.hexdigest()[:32]}"


@dataclass
class StoredNeighbours:
    """One model version's lists: ``lists[kind][parent_asin]`` = neighbours best first."""

    version: int
    meta: dict[str, Any]
    lists: dict[str, dict[str, NeighbourList]] = field(default_factory=dict)

    @property
    def top(self) -> int:
        """Co-review neighbours kept per item."""
        return int(self.meta.get("top", 0))

    @property
    def transitions_top(self) -> int:
        """Transitions kept per item (0 = all)."""
        return int(self.meta.get("transitions_top", 0))


_models = AlsModel.__table__.c
_rows = ItemNeighbours.__table__.c
_LIVE_WITH_METRICS = select(_models.version, _models.metrics).where(_models.status == "live").order_by(
    _models.version.desc())
_LISTS_READ = select(_rows.kind, _rows.parent_asin, _rows.neighbours).where(
    _rows.model_version == bindparam("version"))


def live_neighbour_versions(url: str) -> list[tuple[int, dict[str, Any]]]:
    """``(version, metadata)`` of every live model version (any kind) that has neighbour lists,
    newest first (a few rows: cheap enough to poll)."""
    with read_connection(url) as conn:
        rows = conn.execute(_LIVE_WITH_METRICS).all()
    out = []
    for version, metrics in rows:
        meta = (metrics or {}).get(METRICS_KEY)
        if isinstance(meta, dict) and meta.get("fingerprint"):
            out.append((int(version), dict(meta)))
    return out


def load_neighbours(url: str, *, version: int, meta: dict[str, Any] | None = None) -> StoredNeighbours:
    """Every list of ``version`` (one read; JSON decoded by the driver)."""
    lists: dict[str, dict[str, NeighbourList]] = {}
    with read_connection(url) as conn:
        for kind, asin, neighbours in conn.execute(_LISTS_READ, {"version": version}):
            lists.setdefault(str(kind), {})[str(asin)] = [(str(a), float(s)) for a, s in neighbours or ()]
    return StoredNeighbours(version=version, meta=dict(meta or {}), lists=lists)
