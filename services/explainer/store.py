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


class ReasonCache:
    def __init__(self, *, database_url: str | None, lru_size: int, miss_ttl_s: float = 0.0) -> None:
        self.database_url = database_url
        self.lru: LruCache[CacheKey, str] = LruCache(lru_size)
        self.missed = MissMemory(ttl_s=miss_ttl_s, size=lru_size)
        self.hits = 0
        self.misses = 0

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
        for asin, reason in ((str(r["parent_asin"]), str(r["reason"])) for r in rows):
            self.lru.put((uid, profile_version, asin, model_name), reason)
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

    def in_memory(self, key: RerankKey) -> tuple[dict[str, Any] | None, bool]:
        """(the stored re-rank the LRU holds, whether the database must still be read): no I/O."""
        hit = self.lru.get(key)
        if hit is not None or not self.database_url:
            return hit, False
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
        self.lru.put(key, {"items": items, "method": method, "parsed": parsed})
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
