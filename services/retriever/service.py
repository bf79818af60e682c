"""The retriever's runtime: current snapshot and catalog (swapped by reference), refresh, queries.

A background thread bootstraps the index (newest snapshot, caught up with the DB), then polls the
snapshot manifest every ``RETRIEVER_POLL_S`` and refreshes the catalog statistics every
``RETRIEVER_CATALOG_REFRESH_S``. Requests read ``self._snapshot`` / ``self._catalog`` once and keep
that reference for the whole query, so a swap mid-query is invisible to them. What a query knows
about its user (history, stored profile, profile vector, ALS top-N) comes from
:class:`services.retriever.users.UserLookup`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from services.retriever.candidates import (
    CandidateResult,
    CandidateStrategy,
    HistoryEntry,
    RankingParams,
    TextEncoder,
    core_history,
    generate_candidates,
)
from services.retriever.catalog import Catalog
from services.retriever.config import RetrieverSettings
from services.retriever.index import IndexConfig, IndexSnapshot, set_search_threads
from services.retriever.memo import MEMO, AnswerMemo, NotYet, Precomputer, answer_key
from services.retriever.ranking.live import LiveRanker
from services.retriever.store import CatalogCursor, SnapshotStore, index_store, load_catalog, refresh_catalog
from services.retriever.sync import bootstrap, load_compatible
from services.retriever.users import RequestConnection, UserLookup
from shared import events
from shared.db import database_check, session_scope
from shared.events import ModelEvent, ProfileEvent
from shared.http import DomainError, NotFound
from shared.kafka import EventListener
from shared.logging import get_logger

log = get_logger(__name__)

QUERY_SECONDS = Histogram(
    "recsys_retriever_query_seconds",
    "candidate generation latency",
    ["strategy"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INDEX_ITEMS = Gauge("recsys_retriever_index_items", "items in the served index")
INDEX_VERSION = Gauge("recsys_retriever_index_version", "version of the served index snapshot")
SWAPS = Counter("recsys_retriever_index_swaps_total", "index snapshots swapped in")


class IndexNotReady(DomainError):
    status_code = 503
    code = "index_not_ready"


class RetrieverService:
    """The HTTP process' state: model, snapshot, catalog, refresher and profile-listener threads."""

    def __init__(
        self,
        settings: RetrieverSettings,
        *,
        encoder: TextEncoder | None = None,
        store: SnapshotStore | None = None,
    ) -> None:
        self.settings = settings
        # this instance's own consumer groups (every replica, and every service object of one process,
        # needs every profiles.v1 / models.v1 event; a stopped instance's group never delays a new one)
        self._instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.params = RankingParams.from_settings(settings)
        self.config = IndexConfig.from_settings(settings)
        self.store = store or index_store(settings)
        # the user side of queries: signals, profile and ALS caches (holds the encoder once loaded)
        self.users = UserLookup(settings, params=self.params, encoder=encoder)
        self._snapshot: IndexSnapshot | None = None
        self._catalog: Catalog | None = None
        self._cursor: CatalogCursor | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[EventListener] = []  # profiles.v1 (warm caches), models.v1 (wake the ranker)
        self.last_error: str | None = None
        # hybrid's ranking core, fitted in its own thread so a long fit never delays index refreshes
        self.ranker: LiveRanker | None = (
            LiveRanker(database_url=settings.database_url, refit_s=settings.RETRIEVER_RANKER_REFIT_S,
                       tune_users=settings.RETRIEVER_RANKER_TUNE_USERS)
            if settings.RETRIEVER_RANKER else None
        )
        # hybrid answers kept until their inputs change, and computed ahead of requests (memo.py)
        self.memo: AnswerMemo | None = (
            AnswerMemo(settings.RETRIEVER_PRECOMPUTE_USERS)
            if self.ranker is not None and settings.RETRIEVER_PRECOMPUTE and settings.RETRIEVER_PRECOMPUTE_USERS > 0
            else None
        )
        self.precomputer: Precomputer | None = None

    @property
    def encoder(self) -> TextEncoder | None:
        return self.users.encoder

    # ---- lifecycle ------------------------------------------------------------------------------
    def load_model(self) -> None:
        if self.encoder is None:
            from shared.embeddings import get_encoder

            self.users.encoder = get_encoder(self.settings.EMBEDDING_MODEL, self.settings.DEVICE)

    def start(self) -> None:
        """Load the model (raises if it cannot), then bootstrap and poll in the background."""
        if self._threads:
            return
        set_search_threads(self.settings.RETRIEVER_FAISS_THREADS)
        self.load_model()
        t = threading.Thread(target=self._background, name="retriever-refresh", daemon=True)
        t.start()
        self._threads.append(t)
        if self.ranker is not None:
            r = threading.Thread(target=self._refit_ranker, name="retriever-ranker", daemon=True)
            r.start()
            self._threads.append(r)
        # this instance's own consumer groups, from the latest offset: a missed profiles.v1 event
        # costs one embedding on that user's next request; a missed models.v1 event costs time (the
        # refit pass looks at the live versions every RETRIEVER_RANKER_REFIT_S anyway)
        if self.memo is not None:
            self.precomputer = Precomputer(compute=self.precompute, versions=self.live_versions,
                                           remembered=self.memo.users).start()
        if self.settings.RETRIEVER_PROFILE_LISTENER:
            self._listeners.append(EventListener(
                self.settings, topics=[events.PROFILES], group_id=f"retriever-profiles-{self._instance}",
                handler=self.handle_profile_events, name="retriever-profiles").start())
        if self.ranker is not None and self.settings.RETRIEVER_MODELS_LISTENER:
            self._listeners.append(EventListener(
                self.settings, topics=[events.MODELS], group_id=f"retriever-models-{self._instance}",
                handler=self.handle_model_events, name="retriever-models").start())

    def stop(self) -> None:
        self._stop.set()
        if self.precomputer is not None:
            self.precomputer.stop()
        for listener in self._listeners:
            listener.stop()
        for t in self._threads:
            t.join(timeout=15)

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready:
                return True
            time.sleep(0.05)
        return self.ready

    @property
    def ready(self) -> bool:
        return self._snapshot is not None and self._catalog is not None and self.encoder is not None

    def _background(self) -> None:
        while not self._stop.is_set() and self._snapshot is None:
            try:
                self._bootstrap()
            except Exception as e:  # DB down at start: keep trying, /readyz says why
                self.last_error = f"bootstrap: {e}"
                log.exception("retriever bootstrap failed; retrying")
                self._stop.wait(5.0)
        last_catalog = last_full = time.monotonic()
        while not self._stop.wait(self.settings.RETRIEVER_POLL_S):
            try:
                self.poll_snapshot()
                now = time.monotonic()
                if now - last_full >= self.settings.RETRIEVER_CATALOG_FULL_RELOAD_S:
                    self.reload_catalog()
                    last_full = last_catalog = now
                elif now - last_catalog >= self.settings.RETRIEVER_CATALOG_REFRESH_S:
                    self.refresh_catalog()
                    last_catalog = now
                self.last_error = None
            except Exception as e:
                self.last_error = f"refresh: {e}"
                log.exception("retriever refresh failed; will retry")

    def _refit_ranker(self) -> None:
        """Fit the ranking core once the index is in, then whenever the data changed (at most every
        ``RETRIEVER_RANKER_REFIT_S``). A failed fit keeps the live core and is retried."""
        assert self.ranker is not None
        while not self._stop.wait(0.2):
            if self._snapshot is None or not self.ranker.due():
                continue
            try:
                self.ranker.refit(self._snapshot)
                self.ranker.last_error = None
            except Exception as e:
                self.ranker.last_error = f"refit: {e}"[:500]
                self.ranker.fitted_at = time.time()  # retry after the refit interval, not in a hot loop
                log.exception("ranking core fit failed; keeping the live one")

    def _bootstrap(self) -> None:
        assert self.encoder is not None
        if self.settings.RETRIEVER_SYNC_ON_START:
            snap: IndexSnapshot | None = bootstrap(
                self.store,
                database_url=self.settings.database_url,
                encoder=self.encoder,
                config=self.config,
                batch_size=self.settings.RETRIEVER_EMBED_BATCH,
            )
        else:
            snap = load_compatible(self.store, config=self.config, encoder=self.encoder)
            if snap is None:
                raise IndexNotReady("no index snapshot yet (the indexer has not written one)")
        self.reload_catalog()
        self._swap(snap)

    def _swap(self, snap: IndexSnapshot | None) -> None:
        if snap is None:
            return
        self._snapshot = snap  # a reference assignment: atomic for readers
        SWAPS.inc()
        INDEX_ITEMS.set(len(snap))
        INDEX_VERSION.set(snap.version)
        log.info("index swapped in", extra={"version": snap.version_label, "items": len(snap)})

    def poll_snapshot(self) -> bool:
        """Swap in a newer snapshot if the manifest names one; True when it did."""
        current = self._snapshot
        manifest = self.store.manifest()
        if manifest is None or (current is not None and int(manifest["version"]) <= current.version):
            return False
        assert self.encoder is not None
        snap = load_compatible(self.store, config=self.config, encoder=self.encoder)
        if snap is None or (current is not None and snap.version <= current.version):
            return False
        catalog = self._catalog
        if catalog is not None and any(a not in catalog for a in snap.hashes):
            self.refresh_catalog()  # new items: their metadata must be servable with their vectors
        self._swap(snap)
        return True

    def reload_catalog(self) -> None:
        with session_scope(self.settings.database_url) as s:
            self._catalog, self._cursor = load_catalog(
                s, prior_count=self.settings.RETRIEVER_BAYES_PRIOR_COUNT
            )

    def refresh_catalog(self) -> None:
        if self._catalog is None or self._cursor is None:
            self.reload_catalog()
            return
        with session_scope(self.settings.database_url) as s:
            self._catalog, self._cursor = refresh_catalog(s, self._catalog, self._cursor)

    # ---- profiles.v1 ----------------------------------------------------------------------------
    def handle_profile_events(self, records: Sequence[Any]) -> None:
        from shared.kafka import decode_value

        for r in records:
            try:
                ev = ProfileEvent.model_validate(decode_value(r))
            except ValueError:
                log.warning(
                    "invalid profiles.v1 event skipped", extra={"partition": r.partition, "offset": r.offset}
                )
                continue
            if ev.status == "ready":
                self.users.remember_profile(ev)
                if self.precomputer is not None:
                    self.precomputer.ask(ev.user_id, "profile")

    # ---- models.v1 ------------------------------------------------------------------------------
    def handle_model_events(self, records: Sequence[Any]) -> None:
        """A promoted model version: the ranker's next pass (at once) looks for its lists."""
        from shared.kafka import decode_value

        for r in records:
            try:
                ev = ModelEvent.model_validate(decode_value(r))
            except ValueError:
                log.warning(
                    "invalid models.v1 event skipped", extra={"partition": r.partition, "offset": r.offset}
                )
                continue
            if ev.promoted and self.ranker is not None:
                log.info("model version live: ranker wakes", extra={"kind": ev.kind, "version": ev.version})
                self.ranker.wake()

    # ---- queries --------------------------------------------------------------------------------
    def current(self) -> tuple[IndexSnapshot, Catalog]:
        snap, catalog = self._snapshot, self._catalog
        if snap is None or catalog is None:
            raise IndexNotReady("the item index is still loading")
        return snap, catalog

    def candidates(
        self,
        *,
        user_id: str | None,
        profile_text: str | None,
        strategy: CandidateStrategy,
        k: int | None,
        exclude: Sequence[str] = (),
        als_candidates: Sequence[tuple[str, float]] | None = None,
        profile_vector: Sequence[float] | None = None,
        history: Sequence[HistoryEntry] | None = None,
        profile_version: int | None = None,
        fresh: bool = False,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        snap, catalog = self.current()
        als_version: int | None = None
        core_ready = self.ranker is not None and self.ranker.core is not None
        blend = (strategy == "hybrid" and als_candidates is None and self.settings.RETRIEVER_ALS_BLEND > 0
                 and not core_ready)
        with contextlib.ExitStack() as stack:
            # at most one pool checkout for the user's reads and the ALS top-N
            conn = RequestConnection(self.settings.database_url, stack)
            user = self.users.signals(
                user_id=user_id,
                profile_text=profile_text,
                profile_vector=profile_vector,
                history=history,
                profile_version=profile_version,
                conn=conn,
            )
            if blend and user_id:
                als_version, als_candidates = self.users.als_topn(user_id=user_id, conn=conn)
        kk = k if k is not None else (self.params.llm_k if strategy == "llm_only" else 10)
        core = self.ranker.core if self.ranker is not None else None
        key: bytes | None = None
        if strategy == "hybrid" and core is not None and user_id and user.history and self.memo is not None:
            key = answer_key(history=core_history(user), exclude=exclude, k=kk, dislike=user.dislike_vector,
                             versions=self._versions(snap, catalog, core))
            if fresh:
                MEMO.labels("fresh").inc()
            else:
                stored = self.memo.get(user_id, kk, key)
                MEMO.labels("miss" if stored is None else "hit").inc()
                if stored is not None:
                    QUERY_SECONDS.labels("hybrid_precomputed").observe(time.perf_counter() - started)
                    return stored
        result: CandidateResult = generate_candidates(
            strategy=strategy,
            index=snap,
            catalog=catalog,
            user=user,
            k=kk,
            params=self.params,
            exclude=exclude,
            als_candidates=als_candidates,
            encoder=self.encoder,
            core=core,
        )
        QUERY_SECONDS.labels(strategy).observe(time.perf_counter() - started)
        out = result.to_dict(user_id) | {"als_version": als_version, "precomputed": False}
        if key is not None and user_id and self.memo is not None and result.ranker is not None:
            self.memo.put(user_id, kk, key, out | {"precomputed": True})
            MEMO.labels("stored").inc()
        return out

    @staticmethod
    def _versions(snap: IndexSnapshot, catalog: Catalog, core: Any) -> tuple[Any, ...]:
        """What a ranking-core answer depends on beyond the user: snapshot, catalog, core."""
        return (snap.version_label, id(snap), catalog.generation, core.version, id(core))

    def live_versions(self) -> tuple[Any, ...]:
        snap, catalog = self.current()
        core = self.ranker.core if self.ranker is not None else None
        if core is None:
            raise IndexNotReady("no ranking core yet")
        return self._versions(snap, catalog, core)

    def precompute_info(self) -> dict[str, Any]:
        """The memo of hybrid answers: how many users it holds, how many wait to be computed ahead."""
        if self.memo is None:
            return {"enabled": False}
        pc = self.precomputer
        return {"enabled": True, "answers": len(self.memo), "waiting": pc.waiting() if pc else 0,
                "computed_ahead": pc.done if pc else 0, "k": self.settings.RETRIEVER_PRECOMPUTE_K}

    def precompute(self, user_id: str) -> None:
        """The user's hybrid answer at the gateway's default k, stored for their next request."""
        if not self.ready or self.ranker is None or self.ranker.core is None:
            raise NotYet("no ranking core yet")
        self.candidates(user_id=user_id, profile_text=None, strategy="hybrid",
                        k=self.settings.RETRIEVER_PRECOMPUTE_K, fresh=True)

    def item(self, *, parent_asin: str) -> dict[str, Any]:
        snap, catalog = self.current()
        info = catalog.get(parent_asin)
        if info is None:
            raise NotFound(f"item {parent_asin} not found", code="item_not_found")
        return info.to_dict() | {"indexed": parent_asin in snap, "index_version": snap.version_label}

    def similar(self, *, parent_asin: str, k: int) -> dict[str, Any]:
        snap, catalog = self.current()
        vec = snap.vector(parent_asin)
        if vec is None:
            if parent_asin in catalog:
                raise NotFound(f"item {parent_asin} is not indexed yet", code="item_not_indexed")
            raise NotFound(f"item {parent_asin} not found", code="item_not_found")
        items = []
        for asin, score in snap.search(vec, k + 1):
            info = catalog.get(asin)
            if asin == parent_asin or info is None:
                continue
            items.append(info.to_dict() | {"score": round(score, 6)})
            if len(items) == k:
                break
        return {"parent_asin": parent_asin, "index_version": snap.version_label, "items": items}

    # ---- health ---------------------------------------------------------------------------------
    def readiness(self) -> dict[str, dict[str, Any]]:
        snap = self._snapshot
        checks: dict[str, dict[str, Any]] = {
            "model": {
                "ok": self.encoder is not None,
                "name": self.settings.EMBEDDING_MODEL,
                "dim": getattr(self.encoder, "dim", None),
            },
            "index": {
                "ok": snap is not None and self._catalog is not None,
                "version": snap.version_label if snap else None,
                "size": len(snap) if snap else 0,
                "kind": snap.kind if snap else self.config.kind,
                "catalog_items": len(self._catalog) if self._catalog else 0,
            },
        }
        if self.last_error:
            checks["index"]["last_error"] = self.last_error[:500]
        if self.ranker is not None:
            # informational: hybrid serves with the vector pipeline until the first fit is in
            rk = self.ranker.describe()
            checks["ranker"] = {"ok": True, "ready": rk["ready"], "version": rk.get("version"),
                                "model": (rk.get("model") or {}).get("kind"),
                                "validation_ndcg": rk.get("validation_ndcg"), "last_error": rk.get("last_error")}
        checks["database"] = database_check(self.settings.database_url)
        return checks

