"""The retriever's live ranking core: fitted from the database in the background, swapped by reference.

``LiveRanker.refit`` reads every review and every item's text (``store.training_data``), takes the item
vectors of the current index snapshot for the embedding source, fits a :class:`RankingCore` (its own
temporal validation, model selection and promotion against the live model) and swaps it in. It refits
only when the training data changed (``store.training_data_version``) and at most every
``RETRIEVER_RANKER_REFIT_S``. Requests read ``self.core`` once; a swap mid-request is invisible.

What scales with Spark and what not yet (issue 13, step 3):

* **Served co-review and transition sources: from Spark.** The ALS training job computes every
  item's co-review neighbours and transitions in Spark and stores them with the model version
  (``shared.neighbours``). When a live version's lists were computed on exactly the reviews read here
  (the data fingerprints agree), the core's serving refit (step 4) loads those matrices instead of
  counting them in-process; they are the same numbers, so the ranking is identical. A ``models.v1``
  event (``wake``) makes the next pass look at once: on unchanged data it only swaps the served
  sources (``RankingCore.with_stored``), the model stays. When the lists are missing or older than
  the data (reviews arrived after the training run), the sources are fitted here as before.
* **Validation folds, tuning and the ranker: in-process, still.** Each validation fold holds out
  other users' targets, so no stored list fits it; those fits (``source_folds`` x sources) are the
  bulk of a refit and scale with the data like the served one did. Moving them needs the job to
  write per-fold lists (or the whole RankingCore fit to run in the training job); not done yet.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from prometheus_client import Gauge

from services.retriever.index import IndexSnapshot
from services.retriever.ranking.core import RankingCore, default_factories
from services.retriever.sources.lexical import lexical_text
from services.retriever.store import training_data, training_data_version
from shared.db import session_scope
from shared.logging import get_logger
from shared.neighbours import StoredNeighbours, interactions_fingerprint, live_neighbour_versions, load_neighbours

log = get_logger(__name__)

RANKER_NDCG = Gauge("recsys_retriever_ranker_validation_ndcg", "validation NDCG@10 of the live ranking core")
RANKER_FIT_SECONDS = Gauge("recsys_retriever_ranker_fit_seconds", "seconds the last ranking-core fit took")


def snapshot_vectors(snapshot: IndexSnapshot | None, items: list[Any]) -> tuple[list[str], np.ndarray] | None:
    """(asins, vectors) of the indexed items that have text; None when there are none."""
    if snapshot is None:
        return None
    with_text = [str(it.parent_asin) for it in items if lexical_text(it).strip()]
    asins, vectors = snapshot.vectors_for(with_text)
    return (asins, vectors) if asins else None


class LiveRanker:
    def __init__(self, *, database_url: str, refit_s: float, tune_users: int = 3000,
                 use_stored_lists: bool = True) -> None:
        self.database_url = database_url
        self.refit_s = refit_s
        self.tune_users = tune_users
        self.use_stored_lists = use_stored_lists
        self.core: RankingCore | None = None
        self.data_version: str | None = None
        self.fingerprint: str | None = None  # of the reviews the live core was fitted on
        self.lists_key: tuple[tuple[int, str], ...] = ()  # the live versions with lists, last looked at
        self.fitted_at: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        return self.fitted_at is None or time.time() - self.fitted_at >= self.refit_s

    def wake(self) -> None:
        """A new model version went live (models.v1): look for its lists on the next pass, now."""
        self.fitted_at = None

    def _lists(self) -> tuple[tuple[tuple[int, str], ...], list[tuple[int, dict[str, Any]]]]:
        if not self.use_stored_lists:
            return (), []
        found = live_neighbour_versions(self.database_url)
        return tuple((v, str(m.get("fingerprint"))) for v, m in found), found

    def _stored_for(self, found: list[tuple[int, dict[str, Any]]], fingerprint: str | None) -> StoredNeighbours | None:
        for version, meta in found:  # newest first
            if fingerprint is not None and meta.get("fingerprint") == fingerprint:
                return load_neighbours(self.database_url, version=version, meta=meta)
        return None

    def refit(self, snapshot: IndexSnapshot | None, *, force: bool = False) -> bool:
        """Fit on the current data if it changed, or serve newly stored lists of the data the live core
        was fitted on; True when a new core was swapped in."""
        with self._lock:  # one fit at a time
            key, found = self._lists()
            with session_scope(self.database_url) as s:
                version = training_data_version(s)
                if not force and version == self.data_version:
                    self.fitted_at = time.time()
                    return self._reload_lists(key, found)
                reviews, items = training_data(s)
            if not reviews:
                self.data_version, self.fitted_at = version, time.time()
                return False
            fingerprint = interactions_fingerprint((r.user_id, r.parent_asin, r.timestamp) for r in reviews)
            stored = self._stored_for(found, fingerprint)
            core = RankingCore.fit(interactions=reviews, items=items,
                                   factories=default_factories(vectors=snapshot_vectors(snapshot, items)),
                                   tune_users=self.tune_users, version=version, live=self.core, stored=stored)
            self.core = core  # a reference assignment: atomic for readers
            self.data_version, self.fingerprint, self.lists_key = version, fingerprint, key
            self.fitted_at = time.time()
            RANKER_NDCG.set(core.validation_ndcg)
            RANKER_FIT_SECONDS.set(core.report.get("fit_seconds", 0.0))
            log.info("ranking core swapped in", extra={"version": version, "model": core.report["model"]["kind"],
                                                       "validation_ndcg": core.validation_ndcg,
                                                       "lists_version": core.served_lists_version})
            return True

    def _reload_lists(self, key: tuple[tuple[int, str], ...], found: list[tuple[int, dict[str, Any]]]) -> bool:
        """The data is unchanged; if a newly live version stored lists of exactly this data, serve the
        core's co-review and transition sources from them (the model stays)."""
        if key == self.lists_key or self.core is None:
            return False
        self.lists_key = key
        stored = self._stored_for(found, self.fingerprint)
        if stored is None or stored.version == self.core.served_lists_version:
            return False
        self.core = self.core.with_stored(stored)
        log.info("ranking core serves stored neighbour lists", extra={"version": self.core.version,
                                                                      "lists_version": stored.version})
        return True

    def describe(self) -> dict[str, Any]:
        core = self.core
        if core is None:
            return {"ready": False, "last_error": self.last_error}
        rep = core.report
        return {"ready": True, "version": core.version, "interactions": rep.get("interactions"),
                "model": rep["model"], "sources": rep["sources"], "mmr_lambda": core.mmr_lambda,
                "validation_ndcg": core.validation_ndcg, "validation_users": rep["validation_users"],
                "selection": rep["selection"], "promotion": rep["promotion"], "source_params": rep["source_params"],
                "served_from_lists": rep.get("served_from_lists"),
                "fit_seconds": rep["fit_seconds"], "fitted_at": self.fitted_at, "last_error": self.last_error}
