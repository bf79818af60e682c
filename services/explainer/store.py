"""Reason cache: an in-process LRU in front of the ``explanations`` table.

Key: (user_id, profile_version, parent_asin, model_name). A new profile version or another model
misses by construction, so entries never need invalidating. Only validated LLM reasons are cached
(templates are cheaper to recompute than to fetch). The cache is an optimisation: a database error is
logged and the request goes on without it.

A miss is remembered for ``miss_ttl_s`` (``EXPLAINER_MISS_TTL_S``): a user whose reasons the worker has
not written yet costs one database read per few seconds, not one per request; what the worker writes
meanwhile is served that much later (the worker writes the database, not this process's memory).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shared.db import read_connection, session_scope
from shared.logging import get_logger
from shared.lru import LruCache
from shared.models import Explanation, StoredRerank

log = get_logger(__name__)

CacheKey = tuple[str, int, str, str]  # user_id, profile_version, parent_asin, model_name
ANONYMOUS = "~anonymous"


class MissMemory:
    """Keys recently looked up and not found, each for ``ttl_s`` (0: nothing remembered)."""

    def __init__(self, *, ttl_s: float, size: int) -> None:
        self.ttl_s = ttl_s
        self._until: LruCache[Hashable, float] = LruCache(size if ttl_s > 0 else 0)

    def recent(self, key: Hashable) -> bool:
        until = self._until.get(key)
        return until is not None and until > time.monotonic()

    def note(self, key: Hashable) -> None:
        self._until.put(key, time.monotonic() + self.ttl_s)


#: ids read again on every poll (out-of-order commits; see TableFollower.poll)
OVERLAP = 500


class TableFollower:
    """Keeps an LRU holding every row of a table the explainer worker only ever adds to (autoincrement
    ``id``): the newest rows that fit are loaded once, then each :meth:`poll` adds the rows with a higher
    id. While it is :attr:`complete` (polled within ``stale_s`` and nothing dropped: the table fits the
    LRU), memory is the whole table, so a key that is not in memory is not stored and a request needs no
    database read; otherwise the caches read the database as before."""

    def __init__(self, *, database_url: str, table: Any, columns: Sequence[Any], lru: LruCache[Any, Any],
                 row_item: Any, stale_s: float) -> None:
        self.database_url = database_url
        self.table = table
        self.columns = list(columns)
        self.lru = lru
        self.row_item = row_item  # row -> (key, value)
        self.stale_s = stale_s
        self.last_id: int | None = None
        self.partial = False
        self.polled_at = 0.0

    def poll(self, batch: int = 5_000) -> int:
        """Rows added since the last poll, into memory (the first poll loads the newest that fit).
        Returns how many were new, or ``batch`` when more are waiting (call again)."""
        id_col = self.table.id
        with read_connection(self.database_url) as conn:
            if self.last_id is None:
                size = max(1, self.lru.maxsize)
                rows = conn.execute(select(id_col, *self.columns).order_by(id_col.desc()).limit(size + 1)).all()
                self.partial = len(rows) > size
                rows = rows[:size][::-1]
                caught_up = True
            else:
                # the last OVERLAP ids again: a PostgreSQL transaction can commit after one that took a
                # higher id, and its rows must not be skipped (reading a row twice changes nothing)
                rows = conn.execute(select(id_col, *self.columns).where(id_col > self.last_id - OVERLAP)
                                    .order_by(id_col).limit(batch + OVERLAP)).all()
                caught_up = len(rows) < batch + OVERLAP
        n = 0
        for row in rows:
            key, value = self.row_item(row[1:])
            if self.lru.get(key) is None:
                self.lru.put(key, value)
                n += 1
        self.last_id = max(self.last_id or 0, int(rows[-1][0]) if rows else 0)
        if caught_up:
            self.polled_at = time.monotonic()
            return n
        return batch

    @property
    def complete(self) -> bool:
        return (self.last_id is not None and not self.partial and self.lru.evicted == 0
                and time.monotonic() - self.polled_at <= self.stale_s)


class ReasonCache:
    def __init__(self, *, database_url: str | None, lru_size: int, miss_ttl_s: float = 0.0) -> None:
        self.database_url = database_url
        self.lru: LruCache[CacheKey, str] = LruCache(lru_size)
        self.missed = MissMemory(ttl_s=miss_ttl_s, size=lru_size)
        self.hits = 0
        self.misses = 0
        self.follower: TableFollower | None = None

    def follow(self, *, stale_s: float) -> TableFollower:
        """Keep memory complete by following the table (the serving explainer, while only the worker
        writes); poll it with ``self.follower.poll()``."""
        assert self.database_url
        self.follower = TableFollower(
            database_url=self.database_url, table=Explanation,
            columns=[Explanation.user_id, Explanation.profile_version, Explanation.parent_asin,
                     Explanation.model_name, Explanation.reason],
            lru=self.lru, row_item=lambda r: ((r[0], int(r[1]), r[2], r[3]), r[4]), stale_s=stale_s)
        return self.follower

    def in_memory(
        self, *, user_id: str | None, profile_version: int, model_name: str, asins: Sequence[str]
    ) -> tuple[dict[str, str], bool]:
        """(what the LRU holds, whether the database must still be read): no I/O, so a request whose
        answer is all in memory needs no thread hop."""
        uid = user_id or ANONYMOUS
        found: dict[str, str] = {}
        missing: list[str] = []
        for asin in asins:
            value = self.lru.get((uid, profile_version, asin, model_name))
            if value is not None:
                found[asin] = value
            else:
                missing.append(asin)
        if missing and self.follower is not None and self.follower.complete:
            missing = []  # memory holds every stored reason: these have none yet
        if missing and all(self.missed.recent((uid, profile_version, a, model_name)) for a in missing):
            missing = []  # looked up a moment ago and not there
        return found, bool(missing and self.database_url)

    def get_many(
        self, *, user_id: str | None, profile_version: int, model_name: str, asins: Sequence[str]
    ) -> dict[str, str]:
        """Cached reasons for those of ``asins`` that have one."""
        uid = user_id or ANONYMOUS
        found, read = self.in_memory(user_id=user_id, profile_version=profile_version, model_name=model_name,
                                     asins=asins)
        missing = [a for a in asins if a not in found] if read else []
        if missing and self.database_url:
            try:
                with read_connection(self.database_url) as s:
                    rows = s.execute(
                        select(Explanation.parent_asin, Explanation.reason).where(
                            Explanation.user_id == uid,
                            Explanation.profile_version == profile_version,
                            Explanation.model_name == model_name,
                            Explanation.parent_asin.in_(missing),
                        )
                    ).all()
                for asin, reason in rows:
                    found[asin] = reason
                    self.lru.put((uid, profile_version, asin, model_name), reason)
                for asin in missing:
                    if asin not in found:
                        self.missed.note((uid, profile_version, asin, model_name))
            except Exception:
                log.exception("explanation cache read failed", extra={"user_id": uid})
        self.hits += len(found)
        self.misses += len(asins) - len(found)
        return found

    def put_many(
        self,
        *,
        user_id: str | None,
        profile_version: int,
        model_name: str,
        reasons: Iterable[tuple[str, str]],
        source: str = "llm",
    ) -> None:
        uid = user_id or ANONYMOUS
        rows = [
            {
                "user_id": uid,
                "profile_version": profile_version,
                "parent_asin": asin,
                "model_name": model_name,
                "reason": reason,
                "source": source,
            }
            for asin, reason in reasons
        ]
        self._write(rows, uid)  # write through: committed before this replica serves them (failures logged)
        for asin, reason in ((str(r["parent_asin"]), str(r["reason"])) for r in rows):
            self.lru.put((uid, profile_version, asin, model_name), reason)

    def _write(self, rows: list[dict[str, Any]], uid: str) -> None:
        if not rows or not self.database_url:
            return
        try:
            with session_scope(self.database_url) as s:
                dialect = s.get_bind().dialect.name
                insert = pg_insert if dialect == "postgresql" else sqlite_insert
                stmt = (
                    insert(Explanation)
                    .values(rows)
                    .on_conflict_do_nothing(
                        index_elements=["user_id", "profile_version", "parent_asin", "model_name"]
                    )
                )
                s.execute(stmt)
        except Exception:
            log.exception("explanation cache write failed", extra={"user_id": uid})


RerankKey = tuple[str, int, str, str]  # user_id, profile_version, catalog_version, model_name


class RerankStore:
    """Stored llm_only re-ranks: an in-process LRU in front of the ``reranks`` table. A new profile
    version, catalog (index) version or model misses by construction; nothing needs invalidating."""

    def __init__(self, *, database_url: str | None, lru_size: int, miss_ttl_s: float = 0.0) -> None:
        self.database_url = database_url
        self.lru: LruCache[RerankKey, dict[str, Any]] = LruCache(lru_size)
        self.missed = MissMemory(ttl_s=miss_ttl_s, size=lru_size)
        self.follower: TableFollower | None = None

    def follow(self, *, stale_s: float) -> TableFollower:
        """As :meth:`ReasonCache.follow`, for the stored re-ranks (the worker writes each key once)."""
        assert self.database_url
        self.follower = TableFollower(
            database_url=self.database_url, table=StoredRerank,
            columns=[StoredRerank.user_id, StoredRerank.profile_version, StoredRerank.catalog_version,
                     StoredRerank.model_name, StoredRerank.items, StoredRerank.method, StoredRerank.parsed],
            lru=self.lru, stale_s=stale_s,
            row_item=lambda r: ((r[0], int(r[1]), r[2], r[3]),
                                {"items": list(r[4] or []), "method": r[5], "parsed": int(r[6] or 0)}))
        return self.follower

    def in_memory(self, key: RerankKey) -> tuple[dict[str, Any] | None, bool]:
        """(the stored re-rank the LRU holds, whether the database must still be read): no I/O."""
        hit = self.lru.get(key)
        if hit is not None or not self.database_url:
            return hit, False
        if self.follower is not None and self.follower.complete:
            return None, False  # memory holds every stored re-rank: this one is not written yet
        return None, not self.missed.recent(key)

    def get(self, key: RerankKey, *, fresh: bool = False) -> dict[str, Any] | None:
        """``{"items": [...], "method", "parsed"}`` or None (``fresh``: read the database even when the
        key was missing a moment ago)."""
        hit, read = self.in_memory(key)
        if hit is not None or not self.database_url or not (read or fresh):
            return hit
        uid, version, catalog, model = key
        try:
            with read_connection(self.database_url) as s:
                row = s.execute(
                    select(StoredRerank.items, StoredRerank.method, StoredRerank.parsed).where(
                        StoredRerank.user_id == uid,
                        StoredRerank.profile_version == version,
                        StoredRerank.catalog_version == catalog,
                        StoredRerank.model_name == model,
                    )
                ).first()
        except Exception:
            log.exception("stored re-rank read failed", extra={"user_id": uid})
            return None
        if row is None:
            self.missed.note(key)
            return None
        found = {"items": list(row[0] or []), "method": row[1], "parsed": int(row[2] or 0)}
        self.lru.put(key, found)
        return found

    def put(self, key: RerankKey, *, items: list[dict[str, Any]], method: str, parsed: int) -> None:
        """Write through: the row is committed before this replica serves it as stored, so a stored
        answer is one every replica can read (a failed write still serves it here, and is logged)."""
        self._write(key, items=items, method=method, parsed=parsed)
        self.lru.put(key, {"items": items, "method": method, "parsed": parsed})

    def _write(self, key: RerankKey, *, items: list[dict[str, Any]], method: str, parsed: int) -> None:
        if not self.database_url:
            return
        uid, version, catalog, model = key
        row = {"user_id": uid, "profile_version": version, "catalog_version": catalog, "model_name": model,
               "items": items, "method": method, "parsed": parsed}
        try:
            with session_scope(self.database_url) as s:
                insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
                stmt = insert(StoredRerank).values([row])
                s.execute(stmt.on_conflict_do_update(
                    index_elements=["user_id", "profile_version", "catalog_version", "model_name"],
                    set_={"items": stmt.excluded["items"], "method": stmt.excluded.method,
                          "parsed": stmt.excluded.parsed},
                ))
        except Exception:
            log.exception("stored re-rank write failed", extra={"user_id": uid})


def profile_for_reasons(database_url: str, user_id: str) -> tuple[int, dict[str, list[str]], str] | None:
    """(version, structured terms, summary) of the user's ready profile; None otherwise."""
    from shared.models import Profile

    with session_scope(database_url) as s:
        row = s.get(Profile, user_id)
        if row is None or row.status != "ready":
            return None
        terms = {k: [str(t) for t in (getattr(row, k) or []) if str(t).strip()]
                 for k in ("preferred_products", "liked_features", "dislikes", "potential_interests")}
        return int(row.version or 0), terms, row.summary or ""
