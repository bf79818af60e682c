"""The retriever's live ranking core: fitted from the database in the background, swapped by reference.

``LiveRanker.refit`` reads every review and every item's text (``store.training_data``), takes the item
vectors of the current index snapshot for the embedding source, fits a :class:`RankingCore` (its own
temporal validation, model selection and promotion against the live model) and swaps it in. It refits
only when the training data changed (``store.training_data_version``) and at most every
``RETRIEVER_RANKER_REFIT_S``. Requests read ``self.core`` once; a swap mid-request is invisible.

Fitting in the retriever keeps one process per replica and no new artefact store; on catalogues where
the fit takes minutes, the Spark training job is where the co-review counts belong (issue 13, step 3,
not done yet: see docs/evaluation.md).
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
    def __init__(self, *, database_url: str, refit_s: float, tune_users: int = 3000) -> None:
        self.database_url = database_url
        self.refit_s = refit_s
        self.tune_users = tune_users
        self.core: RankingCore | None = None
        self.data_version: str | None = None
        self.fitted_at: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        return self.fitted_at is None or time.time() - self.fitted_at >= self.refit_s

    def refit(self, snapshot: IndexSnapshot | None, *, force: bool = False) -> bool:
        """Fit on the current data if it changed; True when a new core was swapped in."""
        with self._lock:  # one fit at a time
            with session_scope(self.database_url) as s:
                version = training_data_version(s)
                if not force and version == self.data_version:
                    self.fitted_at = time.time()
                    return False
                reviews, items = training_data(s)
            if not reviews:
                self.data_version, self.fitted_at = version, time.time()
                return False
            core = RankingCore.fit(interactions=reviews, items=items,
                                   factories=default_factories(vectors=snapshot_vectors(snapshot, items)),
                                   tune_users=self.tune_users, version=version, live=self.core)
            self.core = core  # a reference assignment: atomic for readers
            self.data_version, self.fitted_at = version, time.time()
            RANKER_NDCG.set(core.validation_ndcg)
            RANKER_FIT_SECONDS.set(core.report.get("fit_seconds", 0.0))
            log.info("ranking core swapped in", extra={"version": version, "model": core.report["model"]["kind"],
                                                       "validation_ndcg": core.validation_ndcg})
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
                "fit_seconds": rep["fit_seconds"], "fitted_at": self.fitted_at, "last_error": self.last_error}
