"""Evaluation metrics as pure functions, each with its exact definition.

Conventions shared by every function here:

* A recommendation list is ranked best first. Ties in scores are the producer's business (the
  evaluation strategies break them by ``parent_asin``); here only the order counts.
* Duplicates in a recommendation list count once, at their first position.
* ``k`` must be >= 1. When the list is shorter than ``k`` only the list is used; denominators do
  not shrink, so a short list is penalized, never rewarded.
* A metric that is undefined for its input (no users, no relevant items, no rated pairs...)
  returns ``None``: callers drop it rather than reporting a misleading zero.
* Aggregates over users are macro averages (each user weighs the same) unless a docstring says
  the metric is pooled.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from shared.text import content_stems

# --------------------------------------------------------------------------------------------
# helpers


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _top_k(recommended: Sequence[str], k: int) -> list[str]:
    """The first ``k`` distinct items of a ranked list."""
    seen: set[str] = set()
    out: list[str] = []
    for item in recommended:
        if item in seen:
            continue
        seen.add(item)
        out.append(item)
        if len(out) == k:
            break
    return out


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None``; ``None`` when there are none."""
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else None


def content_words(text: str) -> set[str]:
    """The stems of the content words of ``text`` (``shared.text.content_stems``: the tokenizer, stop words
    and stemmer the explainer grounds reasons with), behind the reason-matching metrics (feature mention,
    grounding), so ``wigs`` matches ``wig`` and ``the`` matches nothing."""
    return set(content_stems(text))


def _normalize_reason(text: str) -> str:
    return " ".join(text.casefold().split())


# --------------------------------------------------------------------------------------------
# accuracy: ranking


def hit_rate_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float | None:
    """HitRate@k: 1.0 if any of the top-k items is relevant, else 0.0.

    ``None`` when there is no relevant item (the user cannot be scored). An empty list scores 0.
    """
    _check_k(k)
    rel = set(relevant)
    if not rel:
        return None
    return 1.0 if any(i in rel for i in _top_k(recommended, k)) else 0.0


def recall_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float | None:
    """Recall@k = |top-k ∩ relevant| / |relevant|.

    With a single held-out item (leave-last-out) it equals HitRate@k. ``None`` without relevant items.
    """
    _check_k(k)
    rel = set(relevant)
    if not rel:
        return None
    return len(set(_top_k(recommended, k)) & rel) / len(rel)


def precision_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float | None:
    """Precision@k = |top-k ∩ relevant| / k (``k``, not the list length: short lists are penalized)."""
    _check_k(k)
    rel = set(relevant)
    if not rel:
        return None
    return len(set(_top_k(recommended, k)) & rel) / k


def ndcg_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float | None:
    """NDCG@k with binary relevance.

    DCG = Σ over top-k positions p (1-based) holding a relevant item of 1 / log2(p + 1);
    IDCG = Σ_{p=1}^{min(|relevant|, k)} 1 / log2(p + 1); NDCG = DCG / IDCG.
    Single held-out item: 1 / log2(rank + 1) if it is ranked within k, else 0. ``None`` without
    relevant items.
    """
    _check_k(k)
    rel = set(relevant)
    if not rel:
        return None
    dcg = sum(1.0 / math.log2(p + 1) for p, item in enumerate(_top_k(recommended, k), start=1) if item in rel)
    idcg = sum(1.0 / math.log2(p + 1) for p in range(1, min(len(rel), k) + 1))
    return dcg / idcg


def average_precision_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float | None:
    """AP@k = (Σ over top-k positions p holding a relevant item of Precision@p) / min(|relevant|, k).

    Precision@p here is hits-so-far / p. Single held-out item: 1 / rank if ranked within k, else 0.
    MAP@k is the mean of AP@k over users. ``None`` without relevant items.
    """
    _check_k(k)
    rel = set(relevant)
    if not rel:
        return None
    hits = 0
    total = 0.0
    for p, item in enumerate(_top_k(recommended, k), start=1):
        if item in rel:
            hits += 1
            total += hits / p
    return total / min(len(rel), k)


# --------------------------------------------------------------------------------------------
# accuracy: rating prediction


def rmse(pairs: Iterable[tuple[float, float]]) -> float | None:
    """Root mean squared error over ``(predicted, actual)`` pairs, pooled; ``None`` when empty."""
    errs = [(p - a) ** 2 for p, a in pairs]
    return math.sqrt(sum(errs) / len(errs)) if errs else None


def mae(pairs: Iterable[tuple[float, float]]) -> float | None:
    """Mean absolute error over ``(predicted, actual)`` pairs, pooled; ``None`` when empty."""
    errs = [abs(p - a) for p, a in pairs]
    return sum(errs) / len(errs) if errs else None


# --------------------------------------------------------------------------------------------
# the study's metrics


def cold_start_ratio(cold_flags: Iterable[bool]) -> float | None:
    """Cold Start Ratio: the share of evaluated users served as cold start (no usable profile or
    history, so the strategy fell back to a non-personalized list). ``None`` for no users."""
    flags = list(cold_flags)
    return sum(1 for f in flags if f) / len(flags) if flags else None


def specificity(terms: Sequence[str], vocab: Iterable[str]) -> float | None:
    """Specificity of one profile: the share of its non-empty terms that contain a vocabulary n-gram
    (token-wise, :func:`shared.vocab.is_specific`: the project's one definition, also used by the
    profiler). ``None`` for a profile without terms (instead of ``shared.vocab``'s 0.0), so such a
    profile does not drag the average down as if its terms were vague."""
    from shared import vocab as V
    from shared.text import tokens

    if not any(tokens(t) for t in terms if t):
        return None
    return V.specificity([t for t in terms if t], list(vocab))


def avg_specificity(profiles_terms: Iterable[Sequence[str] | None], vocab: Iterable[str]) -> float | None:
    """Average Specificity Score: the mean of :func:`specificity` over users that have a profile with
    terms. The study: "how many concrete, product-relevant terms appear in user profiles", the
    product-relevant terms being the top-K (K=200) 1-3-grams of the catalogue's titles and
    descriptions (``shared.vocab.build_vocabulary``). Cold users (``None``) are skipped."""
    vocab = list(vocab)
    return mean_or_none(specificity(list(t), vocab) for t in profiles_terms if t is not None)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


def avg_cos_sim(profile_vecs: Iterable[np.ndarray | None],
                item_vec_lists: Iterable[np.ndarray | None]) -> float | None:
    """AvgCosSim: for each user with a profile embedding and >= 1 recommended item, the mean cosine
    similarity between the profile embedding and each recommended item's embedding; then the mean
    over those users. Cold users (profile ``None``) are skipped, as in the study. Zero vectors
    count as cosine 0."""
    per_user = []
    for pv, iv in zip(profile_vecs, item_vec_lists, strict=True):
        if pv is None or iv is None or len(iv) == 0:
            continue
        p = _unit(np.asarray(pv, dtype=np.float64).reshape(-1))
        m = _unit(np.asarray(iv, dtype=np.float64).reshape(len(iv), -1))
        per_user.append(float((m @ p).mean()))
    return mean_or_none(per_user)


def ad_dup_ratio(reason_lists: Iterable[Sequence[str | None]]) -> float | None:
    """AdDupRatio (the study's ad diversity metric; lower is better): over ALL reasons (ad slogans)
    generated for a group of users, pooled, ``1 - distinct / total``. Reasons are compared after
    case-folding and collapsing whitespace; missing or blank reasons are not counted.

    This is the definition that reproduces the study's Table 2 exactly: 27 cold users x 5 slogans,
    all the same -> 1 - 1/135 = 99.26%; 23 warm users x 5 with 95 distinct -> 20/115 = 17.39%;
    together 1 - 96/250 = 61.60%. ``None`` when there is no reason.
    """
    pooled = [_normalize_reason(r) for lst in reason_lists for r in lst if r and r.strip()]
    if not pooled:
        return None
    return 1.0 - len(set(pooled)) / len(pooled)


def avg_rating(rating_lists: Iterable[Sequence[float | None]]) -> float | None:
    """AvgRating: the mean average-star-rating of all recommended items, pooled over users (each
    recommended item counts once per list it appears in). Items without a known rating are skipped."""
    vals = [float(r) for lst in rating_lists for r in lst if r is not None and not math.isnan(r)]
    return sum(vals) / len(vals) if vals else None


# --------------------------------------------------------------------------------------------
# beyond accuracy


def catalog_coverage(rec_lists: Iterable[Sequence[str]], catalog_size: int, k: int) -> float | None:
    """Catalog coverage: |union of every user's top-k| / catalog size. ``None`` for an empty catalogue."""
    _check_k(k)
    if catalog_size <= 0:
        return None
    union: set[str] = set()
    for lst in rec_lists:
        union.update(_top_k(lst, k))
    return min(1.0, len(union) / catalog_size)


def intra_list_diversity(item_vec_lists: Iterable[np.ndarray | None]) -> float | None:
    """Intra-list diversity: per list with >= 2 items, 1 - the mean cosine similarity over all
    unordered pairs of its item embeddings; then the mean over those lists. Lists with fewer than
    two items have no pairs and are skipped; ``None`` when no list qualifies."""
    per_list = []
    for iv in item_vec_lists:
        if iv is None or len(iv) < 2:
            continue
        m = _unit(np.asarray(iv, dtype=np.float64).reshape(len(iv), -1))
        sims = m @ m.T
        n = len(m)
        mean_pair = (sims.sum() - np.trace(sims)) / (n * (n - 1))
        per_list.append(1.0 - float(mean_pair))
    return mean_or_none(per_list)


def novelty(rec_lists: Iterable[Sequence[str]], popularity: Mapping[str, int], n_users: int,
            k: int) -> float | None:
    """Novelty: per list, the mean over its top-k items of -log2 p(i), with
    p(i) = (users who interacted with i in training + 1) / (n_users + 1) (add-one smoothing, so
    an item nobody touched is finite and maximal); then the mean over non-empty lists."""
    _check_k(k)
    if n_users < 0:
        raise ValueError("n_users must be >= 0")
    per_list = []
    for lst in rec_lists:
        top = _top_k(lst, k)
        if not top:
            continue
        per_list.append(sum(-math.log2((popularity.get(i, 0) + 1) / (n_users + 1)) for i in top) / len(top))
    return mean_or_none(per_list)


# --------------------------------------------------------------------------------------------
# explanation quality


def unique_reason_ratio(reason_lists: Iterable[Sequence[str | None]]) -> float | None:
    """Unique-reason ratio: per list with >= 1 reason, distinct reasons / reasons (case-folded,
    whitespace-collapsed; blank ones not counted), then the mean over lists. 1.0 = no reason
    repeated within a user's list. (AdDupRatio is the pooled, across-users view.)"""
    per_list = []
    for lst in reason_lists:
        rs = [_normalize_reason(r) for r in lst if r and r.strip()]
        if rs:
            per_list.append(len(set(rs)) / len(rs))
    return mean_or_none(per_list)


def mentions(reason: str, phrases: Iterable[str]) -> bool:
    """Whether a reason mentions any of the phrases: they share at least one content word
    (see :func:`content_words`)."""
    words = content_words(reason)
    return any(words & content_words(p) for p in phrases if p)


def feature_mention_ratio(pairs: Iterable[tuple[str | None, Sequence[str]]]) -> float | None:
    """Feature-mention ratio over ``(reason, item_feature_phrases)`` pairs, pooled: the share of
    reasons that mention a feature of their item (:func:`mentions`). The caller passes the item's
    ``features`` (its title when it lists none). Pairs with a blank reason or no phrases are not
    counted; ``None`` when none count."""
    flags = [mentions(r, feats) for r, feats in pairs if r and r.strip() and any(f for f in feats)]
    return sum(flags) / len(flags) if flags else None


def grounding_ratio(pairs: Iterable[tuple[str | None, Sequence[str] | None]]) -> float | None:
    """Grounding ratio over ``(reason, profile_terms)`` pairs, pooled: the share of reasons that
    mention at least one term of the user's profile (:func:`mentions`). Reasons of cold users
    (``None`` or empty terms) and blank reasons are not counted; ``None`` when none count."""
    flags = [mentions(r, terms) for r, terms in pairs if r and r.strip() and terms]
    return sum(flags) / len(flags) if flags else None
