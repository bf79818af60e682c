"""Candidate generation and re-ranking: the study's pipelines as plain functions over in-memory data.

Used by the HTTP service, the gateway's fallbacks and the offline evaluation alike; nothing here
touches the network or the database. Inputs: an :class:`IndexSnapshot`, a :class:`Catalog`, a
:class:`UserSignals` (history + optional profile) and :class:`RankingParams`.

* ``hybrid``: user vector -> FAISS top N -> re-rank by cosine to profile and user vector, drop items
  under the minimum rating and the ones already reviewed or excluded, optional ALS blend -> MMR.
* ``llm_only``: items rated >= 4.0 by >= 5 people -> summary vs title vectors (top 300) -> summary vs
  title+features vectors (top 50); the explainer's LLM re-ranks them.
* ``popular`` / cold start: Bayesian-average popularity, a deterministic per-user shuffle within the
  top tier and a round-robin over categories (``shared.popularity.pick_popular``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from services.retriever.catalog import Catalog, ItemInfo
from services.retriever.index import IndexSnapshot
from shared.popularity import DEFAULT_TEMPERATURE, pick_popular

CandidateStrategy = Literal["hybrid", "llm_only", "popular"]
Source = Literal["hybrid", "llm_only", "popular", "als"]
DAY_MS = 86_400_000


class TextEncoder(Protocol):
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    parent_asin: str
    rating: float
    timestamp: int  # ms since epoch


@dataclass(frozen=True)
class UserSignals:
    """What is known about the user at query time."""

    user_id: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    profile_vector: np.ndarray | None = None  # normalized, from the profiler or embedded summary
    profile_text: str | None = None  # the profile summary (llm_only matches it against titles)
    dislike_vector: np.ndarray | None = None  # the profile's dislikes embedded: hybrid pushes away from it

    @property
    def is_cold(self) -> bool:
        return not self.history and self.profile_vector is None and not (self.profile_text or "").strip()


@dataclass(frozen=True, slots=True)
class RankingParams:
    top_n: int = 200
    min_rating: float = 3.3
    keep_unrated: bool = True
    mmr_lambda: float = 0.7
    profile_weight: float = 0.5
    rerank_profile_weight: float = 0.5
    recency_half_life_days: float = 180.0
    dislike_weight: float = 0.5
    history_max: int = 200
    als_weight: float = 0.3
    llm_min_rating: float = 4.0
    llm_min_count: int = 5
    llm_title_top: int = 300
    llm_k: int = 50
    cold_tier: int = 50
    cold_temperature: float = DEFAULT_TEMPERATURE  # stars of Gumbel noise in the per-user shuffle

    @classmethod
    def from_settings(cls, s: Any) -> RankingParams:
        return cls(
            top_n=s.RETRIEVER_TOP_N,
            min_rating=s.RETRIEVER_MIN_RATING,
            keep_unrated=s.RETRIEVER_KEEP_UNRATED,
            mmr_lambda=s.RETRIEVER_MMR_LAMBDA,
            profile_weight=s.RETRIEVER_PROFILE_WEIGHT,
            rerank_profile_weight=s.RETRIEVER_RERANK_PROFILE_WEIGHT,
            recency_half_life_days=s.RETRIEVER_RECENCY_HALF_LIFE_DAYS,
            dislike_weight=s.RETRIEVER_DISLIKE_WEIGHT,
            history_max=s.RETRIEVER_HISTORY_MAX,
            als_weight=s.RETRIEVER_ALS_WEIGHT,
            llm_min_rating=s.RETRIEVER_LLM_MIN_RATING,
            llm_min_count=s.RETRIEVER_LLM_MIN_COUNT,
            llm_title_top=s.RETRIEVER_LLM_TITLE_TOP,
            llm_k=s.RETRIEVER_LLM_K,
            cold_tier=s.RETRIEVER_COLD_TIER,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    parent_asin: str
    score: float
    source: Source
    info: ItemInfo
    channel: str | None = None  # the ranking core's source that ranks it best (coreview, lexical...)


@dataclass(frozen=True)
class CandidateResult:
    strategy: CandidateStrategy
    cold_start: bool
    index_version: str
    items: list[Candidate] = field(default_factory=list)
    ranker: str | None = None  # the ranking core's version when it ranked these items

    def to_dict(self, user_id: str | None) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "strategy": self.strategy,
            "cold_start": self.cold_start,
            "index_version": self.index_version,
            "items": [
                c.info.to_dict() | {"score": round(c.score, 6), "source": c.source, "channel": c.channel}
                for c in self.items
            ],
            "ranker_version": self.ranker,
        }


def _unit(v: np.ndarray | None) -> np.ndarray | None:
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n < 1e-6:
        return None
    return v / n


def rating_weight(rating: float, *, dislike_weight: float) -> float:
    """Liked items pull (5 -> 1.0, 4 -> 0.7), a 3 barely (0.2), disliked ones (<= 2) push away."""
    if rating <= 1:
        return -dislike_weight
    if rating <= 2:
        return -0.7 * dislike_weight
    if rating < 3.5:
        return 0.2
    if rating < 4.5:
        return 0.7
    return 1.0


def history_vector(
    history: Sequence[HistoryEntry], index: IndexSnapshot, params: RankingParams
) -> np.ndarray | None:
    """Recency- and rating-weighted mean of the reviewed items' vectors (None without usable history)."""
    recent = sorted(history, key=lambda h: h.timestamp, reverse=True)[: params.history_max]
    known = [h for h in recent if h.parent_asin in index]
    if not known:
        return None
    newest = max(h.timestamp for h in known)
    half_life_ms = params.recency_half_life_days * DAY_MS
    _, vecs = index.vectors_for([h.parent_asin for h in known])
    weights = np.asarray(
        [
            rating_weight(h.rating, dislike_weight=params.dislike_weight)
            * 0.5 ** ((newest - h.timestamp) / half_life_ms)
            for h in known
        ],
        dtype=np.float32,
    )
    pos = weights > 0
    if not pos.any():
        return None  # only dislikes: there is nothing to move towards
    v = _unit(weights @ vecs)
    if v is None:  # the pushes cancelled the pulls: fall back to what was liked
        v = _unit(weights[pos] @ vecs[pos])
    return v


def embed_text(encoder: TextEncoder | None, text: str | None) -> np.ndarray | None:
    if not text or not text.strip():
        return None
    if encoder is None:
        raise ValueError("profile text given but no encoder to embed it")
    return _unit(encoder.encode([text])[0])


def user_vectors(
    user: UserSignals, index: IndexSnapshot, params: RankingParams, encoder: TextEncoder | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(blended user vector, profile vector); the history alone serves while the profile is pending."""
    profile = _unit(user.profile_vector) if user.profile_vector is not None else None
    if profile is not None and profile.shape[0] != index.dim:
        profile = None  # a vector from another embedding model cannot be compared; use the text
    if profile is None:
        profile = embed_text(encoder, user.profile_text)
    hist = history_vector(user.history, index, params)
    if profile is not None and hist is not None:
        w = params.profile_weight
        return _unit(w * profile + (1 - w) * hist), profile
    return (profile if profile is not None else hist), profile


def mmr_select(vectors: np.ndarray, relevance: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: greedily trade relevance against similarity to what is chosen."""
    n = len(relevance)
    if n == 0 or k <= 0:
        return []
    chosen: list[int] = []
    max_sim = np.full(n, -np.inf, dtype=np.float32)
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        mmr = lam * relevance - (1 - lam) * penalty
        mmr[~available] = -np.inf
        best = int(np.argmax(mmr))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, vectors @ vectors[best])
    return chosen


def _passes_rating(info: ItemInfo, params: RankingParams) -> bool:
    if info.average_rating is None:
        return params.keep_unrated
    return info.average_rating >= params.min_rating


def hybrid_candidates(
    *,
    index: IndexSnapshot,
    catalog: Catalog,
    user: UserSignals,
    k: int,
    params: RankingParams,
    exclude: Iterable[str] = (),
    als_candidates: Sequence[tuple[str, float]] | None = None,
    encoder: TextEncoder | None = None,
) -> CandidateResult:
    """The hybrid pipeline; a user with nothing to go on gets popular items (cold_start=True)."""
    u, profile = user_vectors(user, index, params, encoder)
    if u is None:
        return popular_candidates(
            catalog=catalog,
            user=user,
            k=k,
            params=params,
            exclude=exclude,
            index_version=index.version_label,
            strategy="hybrid",
            cold_start=True,
        )
    # Everything below works on index slots with numpy: per-candidate Python over the 200 hits was
    # most of the retriever's CPU per request under load.
    banned = index.slots_of(set(exclude) | {h.parent_asin for h in user.history})
    slots, _ = index.search_slots(u, params.top_n + len(banned))
    if len(banned):
        slots = slots[~np.isin(slots, banned)]
    als_by_slot: dict[int, float] = {}
    for asin, score in als_candidates or ():
        slot = index.asin_slot.get(asin)
        if slot is None or not math.isfinite(score):
            continue  # an item without a vector cannot be ranked or diversified here
        als_by_slot.setdefault(slot, float(score))
    if als_by_slot:
        extra = np.asarray(list(als_by_slot), dtype=np.int64)
        extra = extra[~np.isin(extra, slots)]
        if len(banned):
            extra = extra[~np.isin(extra, banned)]
        slots = np.concatenate([slots, extra])
    keep = slots[_rating_ok_mask(index, catalog, params)[slots]]
    if not len(keep):
        return CandidateResult("hybrid", False, index.version_label)
    vecs = index.vectors[keep]
    relevance = vecs @ u
    if profile is not None:
        w = params.rerank_profile_weight
        relevance = w * (vecs @ profile) + (1 - w) * relevance
    source_of = np.zeros(len(keep), dtype=bool)  # True: "als"
    if als_by_slot:
        raw = np.full(len(keep), np.nan, dtype=np.float32)
        position = {int(s): i for i, s in enumerate(keep.tolist())}
        for slot, score in als_by_slot.items():
            i = position.get(slot)
            if i is not None:
                raw[i] = score
        present = ~np.isnan(raw)
        if present.any():
            lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
            norm = np.where(present, (raw - lo) / (hi - lo) if hi > lo else 1.0, 0.0)
            vector_part = (1 - params.als_weight) * relevance
            als_part = params.als_weight * norm
            relevance = vector_part + als_part
            # provenance: "als" where the ALS share of the blended score outweighs the vector share
            source_of = present & (als_part > vector_part)
    order = mmr_select(vecs, relevance.astype(np.float32), k, params.mmr_lambda)
    items = []
    for i in order:
        slot_asin = index.slot_asin[int(keep[i])]
        info = catalog.get(slot_asin) if slot_asin is not None else None
        if slot_asin is not None and info is not None:
            items.append(Candidate(slot_asin, float(relevance[i]), "als" if source_of[i] else "hybrid", info))
    return CandidateResult("hybrid", False, index.version_label, items)


def _rating_ok_mask(index: IndexSnapshot, catalog: Catalog, params: RankingParams) -> np.ndarray:
    """Boolean per slot: the item is in the catalog and passes the minimum rating (memoized per
    snapshot and catalog generation, like the llm_only eligibility)."""
    key = ("rating_ok", catalog.generation, params.min_rating, params.keep_unrated)
    mask = index.derived.get(key)
    if mask is None:
        mask = np.zeros(len(index.slot_asin), dtype=bool)
        for slot, asin in enumerate(index.slot_asin):
            info = catalog.get(asin) if asin is not None else None
            mask[slot] = info is not None and _passes_rating(info, params)
        for old in [k for k in list(index.derived) if isinstance(k, tuple) and k[0] == "rating_ok"]:
            index.derived.pop(old, None)  # one catalog generation at a time
        index.derived[key] = mask
    return mask


def _eligible_llm_slots(index: IndexSnapshot, catalog: Catalog, params: RankingParams) -> np.ndarray:
    key = ("llm_eligible", catalog.generation, params.llm_min_rating, params.llm_min_count)
    if key not in index.derived:
        slots = []
        for asin, slot in index.asin_slot.items():
            info = catalog.get(asin)
            if (
                info is not None
                and info.average_rating is not None
                and info.average_rating >= params.llm_min_rating
                and info.rating_number >= params.llm_min_count
            ):
                slots.append(slot)
        for old in [k for k in list(index.derived) if isinstance(k, tuple) and k[0] == "llm_eligible"]:
            index.derived.pop(old, None)  # one catalog generation at a time
        eligible = np.asarray(sorted(slots), dtype=np.int64)
        index.derived[key] = eligible
        return eligible
    return index.derived[key]


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    if len(scores) <= n:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.argsort(-scores[part], kind="stable")]


def llm_only_candidates(
    *,
    index: IndexSnapshot,
    catalog: Catalog,
    user: UserSignals,
    k: int | None,
    params: RankingParams,
    exclude: Iterable[str] = (),
    encoder: TextEncoder | None = None,
) -> CandidateResult:
    """Filter by rating and count, then summary vs titles (top 300), then vs title+features (top k)."""
    # the profile vector (the profiler's, or the summary embedded once and cached by the service)
    # is the summary's embedding; embed the text only when no vector came with it
    query = _unit(user.profile_vector) if user.profile_vector is not None else None
    if query is None or query.shape[0] != index.dim:
        query = embed_text(encoder, user.profile_text)
    if query is None:
        query, _ = user_vectors(
            UserSignals(user_id=user.user_id, history=user.history, profile_vector=user.profile_vector),
            index,
            params,
            encoder,
        )
    if query is None:
        return popular_candidates(
            catalog=catalog,
            user=user,
            k=k or params.llm_k,
            params=params,
            exclude=exclude,
            index_version=index.version_label,
            strategy="llm_only",
            cold_start=True,
        )
    banned = set(exclude) | {h.parent_asin for h in user.history}
    slots = _eligible_llm_slots(index, catalog, params)
    if banned:
        slots = slots[[index.slot_asin[s] not in banned for s in slots.tolist()]] if len(slots) else slots
    if not len(slots):
        return CandidateResult("llm_only", False, index.version_label)
    stage1 = slots[_top(index.title_vectors[slots] @ query, params.llm_title_top)]
    scores = index.vectors[stage1] @ query
    stage2 = _top(scores, k or params.llm_k)
    items = []
    for i in stage2.tolist():
        asin = index.slot_asin[int(stage1[i])]
        info = catalog.get(asin) if asin else None
        if asin and info:
            items.append(Candidate(asin, float(scores[i]), "llm_only", info))
    return CandidateResult("llm_only", False, index.version_label, items)


def popular_candidates(
    *,
    catalog: Catalog,
    user: UserSignals,
    k: int,
    params: RankingParams,
    exclude: Iterable[str] = (),
    index_version: str = "",
    strategy: CandidateStrategy = "popular",
    cold_start: bool | None = None,
) -> CandidateResult:
    """Popular items for this user: top tier by Bayesian average, shuffled per user, mixed by category.

    ``cold_start`` defaults to "the user has neither history nor profile".
    """
    banned = set(exclude) | {h.parent_asin for h in user.history}
    picked = pick_popular(
        (info for info in catalog.popular_order() if _passes_rating(info, params)),
        user_id=user.user_id,
        k=k,
        exclude=banned,
        tier=params.cold_tier,
        temperature=params.cold_temperature,
    )
    items = [Candidate(i.parent_asin, float(i.bayes_score), "popular", i) for i in picked]
    return CandidateResult(strategy, user.is_cold if cold_start is None else cold_start, index_version, items)


def push_away(ranked: Sequence[Any], *, index: IndexSnapshot, dislike: np.ndarray, weight: float) -> list[Any]:
    """Re-order a ranked list so that items close to the user's dislikes move down: each item's place
    value ``1 - position / n`` loses ``weight * max(0, cosine(item, dislikes))`` (items without a vector
    keep theirs). Stable: equal values keep the model's order."""
    if weight <= 0 or not ranked:
        return list(ranked)
    d = _unit(dislike)
    if d is None:
        return list(ranked)
    n = len(ranked)
    value = []
    for pos, r in enumerate(ranked):
        vec = _unit(index.vector(r.parent_asin))
        cos = float(np.dot(vec, d)) if vec is not None else 0.0
        value.append(1.0 - pos / n - weight * max(0.0, cos))
    order = sorted(range(n), key=lambda i: -value[i])
    return [ranked[i] for i in order]


def core_history(user: UserSignals) -> list[str]:
    """The history as the ranking core reads it: oldest first (the signals hold the newest first),
    ties by asin as the core was fitted."""
    return [h.parent_asin for h in sorted(user.history, key=lambda h: (h.timestamp, h.parent_asin))]


def ranked_candidates(
    *,
    core: Any,
    index: IndexSnapshot,
    catalog: Catalog,
    user: UserSignals,
    k: int,
    params: RankingParams,
    exclude: Iterable[str] = (),
) -> CandidateResult | None:
    """hybrid with the ranking core (``services.retriever.ranking``): the user's history through its
    sources and model, the rating floor applied, items the catalog cannot show skipped. None for a
    user without history (the vector pipeline and cold start handle them)."""
    history = core_history(user)
    if not history:
        return None
    excluded = set(exclude) | set(history)
    items: list[Candidate] = []
    ranked = core.rank(history=history, k=3 * k, exclude=excluded)
    if user.dislike_vector is not None:
        ranked = push_away(ranked, index=index, dislike=user.dislike_vector, weight=params.dislike_weight)
    for r in ranked:
        info = catalog.get(r.parent_asin)
        if info is None or not _passes_rating(info, params):
            continue
        items.append(Candidate(r.parent_asin, r.score, "hybrid", info, channel=r.source))
        if len(items) == k:
            break
    return CandidateResult("hybrid", False, index.version_label, items, ranker=core.version)


def generate_candidates(
    *,
    strategy: CandidateStrategy,
    index: IndexSnapshot,
    catalog: Catalog,
    user: UserSignals,
    k: int,
    params: RankingParams,
    exclude: Iterable[str] = (),
    als_candidates: Sequence[tuple[str, float]] | None = None,
    encoder: TextEncoder | None = None,
    core: Any = None,
) -> CandidateResult:
    """Dispatch on strategy (the one entry point the service and the evaluation call). ``core``: the
    live ranking core; hybrid uses it for users with history, the vector pipeline otherwise."""
    exclude = list(exclude)
    if strategy == "hybrid" and core is not None:
        ranked = ranked_candidates(core=core, index=index, catalog=catalog, user=user, k=k, params=params,
                                   exclude=exclude)
        if ranked is not None and ranked.items:
            return ranked
    if strategy == "hybrid":
        return hybrid_candidates(
            index=index,
            catalog=catalog,
            user=user,
            k=k,
            params=params,
            exclude=exclude,
            als_candidates=als_candidates,
            encoder=encoder,
        )
    if strategy == "llm_only":
        return llm_only_candidates(
            index=index, catalog=catalog, user=user, k=k, params=params, exclude=exclude, encoder=encoder
        )
    if strategy == "popular":
        return popular_candidates(
            catalog=catalog, user=user, k=k, params=params, exclude=exclude, index_version=index.version_label
        )
    raise ValueError(f"unknown strategy {strategy!r}")
