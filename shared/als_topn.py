"""Serving reads of ALS results, shared by the ALS service and the retriever's hybrid blend.

Training (``services.als``) stores, per model version, each user's top-N as item ordinals and scores
(``als_topn``) and the ordinal → parent_asin table (``als_item_index``). Serving needs three reads:
the live version of a kind (cached a few seconds: a new model is picked up within ``ttl_s``), the item
table of a version (immutable once written: cached per process) and one user's row (a primary-key
lookup). The statements are built once: constructing them per request cost more than the reads.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache

import numpy as np
from sqlalchemy import Connection, bindparam, select

from shared.db import read_connection
from shared.models import AlsItemIndex, AlsModel, AlsTopN

_models, _topn, _index = AlsModel.__table__.c, AlsTopN.__table__.c, AlsItemIndex.__table__.c
_LIVE_READ = (
    select(_models.version)
    .where(_models.kind == bindparam("kind"), _models.status == "live")
    .order_by(_models.version.desc())
    .limit(1)
)
_TOPN_READ = select(_topn["items"], _topn["scores"]).where(
    _topn.model_version == bindparam("version"), _topn.user_id == bindparam("user_id")
)
_INDEX_READ = select(_index.item_ids).where(_index.model_version == bindparam("version"))


def live_version(url: str, *, kind: str) -> int | None:
    """The newest live model version of ``kind`` (None before the first model goes live)."""
    with read_connection(url) as conn:
        v = conn.execute(_LIVE_READ, {"kind": kind}).scalar()
    return None if v is None else int(v)


class LiveVersion:
    """``live_version`` cached for ``ttl_s`` seconds (a per-request read would double the DB work)."""

    def __init__(self, url: str, *, kind: str, ttl_s: float = 2.0) -> None:
        self.url, self.kind, self.ttl_s = url, kind, ttl_s
        self._value: tuple[float, int | None] | None = None
        self._lock = threading.Lock()

    def get(self) -> int | None:
        hit = self._value
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        with self._lock:
            hit = self._value
            if hit is None or time.monotonic() - hit[0] >= self.ttl_s:
                self._value = hit = (time.monotonic(), live_version(self.url, kind=self.kind))
        return hit[1]


@lru_cache(maxsize=4)
def item_index(url: str, version: int) -> np.ndarray:
    """The item ids of a version in ordinal order (immutable once written, so cached per process)."""
    with read_connection(url) as conn:
        raw = conn.execute(_INDEX_READ, {"version": version}).scalar()
    if raw is None:
        return np.array([], dtype=object)
    return np.array(bytes(raw).decode().split("\n"), dtype=object)


def user_topn(
    url: str, *, version: int, user_id: str, k: int, conn: Connection | None = None
) -> list[tuple[str, float]]:
    """The user's top-k unseen items of a model version, best first ([] when the user is not in it);
    ``conn``: a caller's open read connection (one pool checkout for several reads)."""
    if conn is None:
        with read_connection(url) as own:
            row = own.execute(_TOPN_READ, {"version": version, "user_id": user_id}).first()
    else:
        row = conn.execute(_TOPN_READ, {"version": version, "user_id": user_id}).first()
    if row is None:
        return []
    ordinals = np.frombuffer(bytes(row[0]), dtype="<i4")[:k]
    scores = np.frombuffer(bytes(row[1]), dtype="<f4")[:k]
    ids = item_index(url, version)
    return [(str(ids[o]), round(float(v), 6)) for o, v in zip(ordinals, scores, strict=True)]
