"""What the retriever knows about a user at query time, and the per-process caches behind it.

* :class:`UserLookup` turns a request's user fields into :class:`UserSignals`: the history (sent by
  the caller or read), the stored profile (cached per profile version the caller saw) and the profile
  vector (the stored embedding, else the profile text embedded once and cached).
* The hybrid blend's ALS top-N of the live model, cached per (user, model version).

Nothing here needs invalidating: a profile write bumps its version and an ALS version's rows never
change, so every cache is keyed by something that never changes meaning.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence

import numpy as np
from prometheus_client import Counter
from sqlalchemy import Connection

from services.retriever.candidates import HistoryEntry, RankingParams, TextEncoder, UserSignals
from services.retriever.config import RetrieverSettings
from services.retriever.store import StoredProfile, load_history, load_profile
from shared.als_topn import LiveVersion, user_topn
from shared.db import read_connection
from shared.embeddings import from_bytes
from shared.events import ProfileEvent
from shared.http import DomainError
from shared.logging import get_logger
from shared.lru import LruCache
from shared.text import dislikes_text

log = get_logger(__name__)

ALS_BLEND = Counter("recsys_retriever_als_blend_total", "hybrid requests by ALS blend outcome", ["result"])
HISTORY_SOURCE = Counter(
    "recsys_retriever_history_total", "where a request's user history came from", ["source"]
)
PROFILE_CACHE = Counter("recsys_retriever_profile_vectors_total", "profile vector lookups", ["result"])

PROFILE_VECTORS_KEPT = 50_000


class RequestConnection:
    """One read connection per request, opened on first use (none when every read is answered by the
    request or the caches)."""

    def __init__(self, url: str, stack: contextlib.ExitStack) -> None:
        self.url, self.stack = url, stack
        self._conn: Connection | None = None

    def __call__(self) -> Connection:
        if self._conn is None:
            self._conn = self.stack.enter_context(read_connection(self.url))
        return self._conn


class UserLookup:
    """The user side of a query: signals, stored profiles, profile vectors and ALS top-N, with caches."""

    def __init__(
        self, settings: RetrieverSettings, *, params: RankingParams, encoder: TextEncoder | None = None
    ) -> None:
        self.settings = settings
        self.params = params
        self.encoder = encoder  # set once the model is loaded (the service's start)
        # (user_id, profile version) or ("text:<sha1>", 0) -> normalized profile vector
        self.profiles: LruCache[tuple[str, int], np.ndarray] = LruCache(PROFILE_VECTORS_KEPT)
        # (user_id, profile version the caller saw) -> StoredProfile | None. The content is read after
        # the caller's own read, so it is never older than the key's version, and every profile write
        # bumps the version: nothing to invalidate.
        self.stored_profiles: LruCache[tuple[str, int], StoredProfile | None] = LruCache(
            settings.RETRIEVER_USER_CACHE_SIZE
        )
        # (user_id, ALS model version) -> top-N: a version's stored rows never change.
        self.als_rows: LruCache[tuple[str, int], list[tuple[str, float]]] = LruCache(
            settings.RETRIEVER_USER_CACHE_SIZE
        )
        self.als_live = LiveVersion(settings.database_url, kind=settings.ALS_SERVING_KIND)

    @property
    def dim(self) -> int:
        return self.encoder.dim if self.encoder is not None else 0

    def signals(
        self,
        *,
        user_id: str | None,
        profile_text: str | None,
        profile_vector: Sequence[float] | None,
        conn: RequestConnection,
        history: Sequence[HistoryEntry] | None = None,
        profile_version: int | None = None,
    ) -> UserSignals:
        """What is known about the user. ``history`` (the caller read it) and ``profile_version`` (the
        version the caller saw, 0 = none) spare the reads they cover; ``conn`` opens the request's
        read connection when a read is still needed."""
        vec: np.ndarray | None = None
        summary = profile_text
        if profile_vector is not None:
            if len(profile_vector) != self.dim:
                raise DomainError(
                    f"profile_vector has {len(profile_vector)} dimensions, the index has {self.dim}",
                    code="invalid_profile_vector",
                    status_code=422,
                )
            vec = np.asarray(profile_vector, dtype=np.float32)
            if not np.isfinite(vec).all() or float(np.linalg.norm(vec)) == 0.0:
                raise DomainError(
                    "profile_vector must be finite and non-zero",
                    code="invalid_profile_vector",
                    status_code=422,
                )
        stored: StoredProfile | None = None
        hist: tuple[HistoryEntry, ...] = ()
        if user_id:
            hist, stored = self._reads(user_id=user_id, history=history, profile_version=profile_version, conn=conn)
        text_given = (profile_text or "").strip()
        if vec is None and stored is not None and (not text_given or text_given == stored.summary.strip()):
            vec = self.profile_vector(stored)  # the gateway sends the stored summary back: reuse its vector
        if vec is None and text_given:
            vec = self.text_vector(text_given)
        dislike: np.ndarray | None = None
        if stored is not None:
            summary = summary or stored.summary or stored.text or None
            dislike = self.dislike_vector(stored)
        return UserSignals(user_id=user_id, history=hist, profile_vector=vec, profile_text=summary,
                           dislike_vector=dislike)

    def dislike_vector(self, stored: StoredProfile) -> np.ndarray | None:
        """The stored profile's dislikes vector: the profiler's when it fits the model, else the same
        text embedded here once per profile version (cached); None without any dislikes."""
        if not stored.dislikes or self.encoder is None:
            return None
        if stored.dislike_embedding:
            given = from_bytes(stored.dislike_embedding)
            if given.shape[0] == self.dim:
                PROFILE_CACHE.labels("stored").inc()
                return given
        key = ("dislikes:" + stored.user_id, stored.version)
        vec = self.profiles.get(key)
        if vec is None:
            PROFILE_CACHE.labels("embedded").inc()
            vec = self.encoder.encode([dislikes_text(stored.dislikes)])[0]
            self.profiles.put(key, vec)
        return vec

    def _reads(
        self,
        *,
        user_id: str,
        history: Sequence[HistoryEntry] | None,
        profile_version: int | None,
        conn: RequestConnection,
    ) -> tuple[tuple[HistoryEntry, ...], StoredProfile | None]:
        """History and stored profile: from the request and the cache where they can be, else read."""
        if history is not None:
            HISTORY_SOURCE.labels("request").inc()
            hist = tuple(sorted(history, key=lambda h: h.timestamp, reverse=True)[: self.params.history_max])
        else:
            HISTORY_SOURCE.labels("database").inc()
            hist = load_history(conn(), user_id, history_max=self.params.history_max)
        key = (user_id, profile_version) if profile_version is not None else None
        if key is not None:
            found, cached = self.stored_profiles.lookup(key)
            if found:
                return hist, cached
        stored = load_profile(conn(), user_id)
        if key is not None:
            self.stored_profiles.put(key, stored)
        return hist, stored

    def profile_vector(self, stored: StoredProfile) -> np.ndarray | None:
        """The stored embedding when it fits the model, else the profile text embedded (cached)."""
        if stored.embedding:
            vec = from_bytes(stored.embedding)
            if vec.shape[0] == self.dim:
                PROFILE_CACHE.labels("stored").inc()
                return vec
        key = (stored.user_id, stored.version)
        cached = self.profiles.get(key)
        if cached is not None:
            PROFILE_CACHE.labels("cached").inc()
            return cached
        if not stored.text or self.encoder is None:
            return None
        PROFILE_CACHE.labels("embedded").inc()
        vec = self.encoder.encode([stored.text])[0]
        self.profiles.put(key, vec)
        return vec

    def text_vector(self, text_: str) -> np.ndarray | None:
        """Embedding of a free profile text, cached by its hash (callers resend the same summaries)."""
        if self.encoder is None:
            return None
        key = ("text:" + hashlib.sha1(text_.encode()).hexdigest(), 0)
        vec = self.profiles.get(key)
        if vec is None:
            PROFILE_CACHE.labels("embedded").inc()
            vec = self.encoder.encode([text_])[0]
            self.profiles.put(key, vec)
        else:
            PROFILE_CACHE.labels("cached").inc()
        return vec

    def remember_profile(self, event: ProfileEvent) -> None:
        """Warm the profile-vector cache from a ready profile event (its embedding, else the stored row)."""
        if event.embedding and self.encoder is not None and len(event.embedding) == self.encoder.dim:
            self.profiles.put((event.user_id, event.version), np.asarray(event.embedding, dtype=np.float32))
            return
        with read_connection(self.settings.database_url) as conn:
            stored = load_profile(conn, event.user_id)
        if stored is not None:
            self.profile_vector(stored)

    def als_topn(
        self, *, user_id: str, conn: RequestConnection | None = None
    ) -> tuple[int | None, list[tuple[str, float]] | None]:
        """(live ALS version, the user's stored top-N) for the hybrid blend; (None, None) without a
        live model, the user in it, or a readable database (ALS only refines the ranking)."""
        try:
            version = self.als_live.get()
            if version is None:
                return None, None
            top = self.als_rows.get((user_id, version))
            if top is None:
                top = user_topn(
                    self.settings.database_url,
                    version=version,
                    user_id=user_id,
                    k=self.settings.RETRIEVER_ALS_BLEND,
                    conn=conn() if conn is not None else None,
                )
                self.als_rows.put((user_id, version), top)
        except Exception as e:
            ALS_BLEND.labels("error").inc()
            log.warning("ALS top-N read failed; hybrid without ALS", extra={"error": str(e)[:300]})
            return None, None
        ALS_BLEND.labels("blended" if top else "user_not_in_model").inc()
        return (version, top) if top else (None, None)
