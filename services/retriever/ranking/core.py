"""The ranking core: candidate sources, tuned and ranked on a temporal validation target.

``RankingCore.fit(interactions=..., items=...)`` does the whole training job:

1. **Validation split.** Every user with at least two interactions holds out their newest one
   (ties by ``parent_asin``, as the evaluation orders them) as the validation target; the history
   before it is their query (``rounds`` > 1 adds older rounds: the item before it, and so on). The
   users (a seeded sample of at most ``tune_users``) are split into ``source_folds`` folds, and each
   fold's sources are fitted on everything except that fold's targets: every other user's
   interactions stay in, as they do when the served model is fitted, so a source validated here sees
   almost the data it is served with (with every target held out at once, co-review looked worse
   than it is on the small 5-core sets; an older round, further from the next item, preferred
   transitions that did not carry over: see docs/evaluation.md).
2. **Each source's scoring parameters** (recency decay, history length, popular's window and
   rating floor) are chosen on validation NDCG@k, one source at a time (a seeded sample of at most
   ``tune_users`` users).
3. **The model.** The union of the sources' lists is turned into features (:mod:`features`) and
   :func:`learn.select_model` cross-fits a coordinate-ascent blend, a LightGBM LambdaRank model and
   their ensemble over ``model_folds`` user folds; the ensemble is served unless the blend or the
   ranker alone beats it by more than a standard error of the paired per-user difference (a few
   hundred validation users rarely tell them apart, and the average of the two is then the choice
   with the least variance). The blend starts from the best single source and only accepts
   improvements, so it is never worse on validation than that source. With fewer than
   ``min_queries`` usable validation users the ranker is not tried.
   MMR's lambda is then chosen within its budget on both the out-of-fold and the served model's
   scores of the validation queries.
4. **Refit for serving.** The sources and item facts are refitted on all interactions with the
   chosen parameters; the model scores their features unchanged. With ``stored`` (the Spark training
   job's neighbour lists, computed on these same interactions) the co-review and transition sources
   take their matrices from the lists instead (:mod:`services.retriever.sources.stored`): the same
   numbers, without the in-process count. The validation folds of steps 1-3 always fit in-process
   (each fold holds out other targets, so no stored list fits them).

``rank(history=..., k=...)`` then gives a user's top ``k`` with each item's score and the source that
ranks it best (``popular`` fills short lists). Users without history get popular.
"""
from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.retriever.ranking.diversity import ItemSimilarity, choose_lambda, diversify
from services.retriever.ranking.features import FeatureBuilder, ItemFacts, UserCandidates
from services.retriever.ranking.learn import (
    BlendModel,
    EnsembleModel,
    LambdaRanker,
    Queries,
    Selection,
    ndcg_at,
    select_model,
)
from services.retriever.sources.base import Candidates, CandidateSource, order_key, with_params
from services.retriever.sources.coreview import CoReviewSource
from services.retriever.sources.embedding import EmbeddingSource
from services.retriever.sources.lexical import LexicalSource, ReviewTextSource
from services.retriever.sources.popular import PopularSource
from services.retriever.sources.stored import load_into
from services.retriever.sources.transitions import TransitionSource
from shared.neighbours import StoredNeighbours
from shared.records import get_field

#: Scoring parameters tried per source on validation (the fit is shared by all of them).
SOURCE_GRID: dict[str, list[dict[str, Any]]] = {
    "coreview": [{"decay": d} for d in (1.0, 0.8, 0.6, 0.4, 0.25)],
    "transitions": [{"decay": d, "backward_weight": b} for d in (1.0, 0.5, 0.25) for b in (0.0, 0.5, 1.0)],
    # content: 0.8 first (the reference ``tfidf``'s decay), so that an exact tie (users who keep to one
    # taste cannot tell the decays apart) keeps some recency rather than none
    "lexical": [{"decay": d} for d in (0.8, 1.0, 0.5, 0.25)],
    "embedding": [{"decay": d} for d in (0.8, 1.0, 0.5, 0.25)],
    "reviews": [{"decay": d} for d in (0.8, 1.0, 0.5, 0.25)],
    "popular": [{"window_days": w, "min_rating": r} for w in (None, 365.0, 90.0, 30.0) for r in (None, 4.0)],
}
#: Sources that take constructor parameters (popular's window) rather than scoring parameters.
REFIT_PARAMS = {"popular"}


@dataclass(frozen=True)
class Ranked:
    parent_asin: str
    score: float
    source: str


@dataclass
class ValidationUser:
    user: str
    history: list[str]
    target: str
    seen: set[str]


def validation_split(interactions: Sequence[Any], *, back: int = 0, only: Container[str] | None = None,
                     ) -> tuple[list[Any], list[ValidationUser]]:
    """(interactions without the targets, one :class:`ValidationUser` per user with >= 2 items).

    ``back = 0``: each user's newest item is the target; ``back = 1``: the one before it, with the
    newest dropped as well (a second, older validation round on the same users). ``only``: hold out
    the targets (and what follows them) of these users only; everybody else's interactions stay in
    whole, as every other user's do when the test item of one user is held out."""
    by_user: dict[str, list[Any]] = {}
    for r in interactions:
        by_user.setdefault(str(get_field(r, "user_id")), []).append(r)
    rest: list[Any] = []
    users: list[ValidationUser] = []
    for user, rs in sorted(by_user.items()):
        seq = sorted(rs, key=order_key)
        if only is not None and user not in only:
            rest.extend(seq)
            continue
        if back and len(seq) >= 2 + back:
            seq = seq[:-back]
        elif back:
            rest.extend(seq)
            continue
        if len(seq) >= 2:
            rest.extend(seq[:-1])
            hist = [str(get_field(r, "parent_asin")) for r in seq[:-1]]
            users.append(ValidationUser(user, hist, str(get_field(seq[-1], "parent_asin")), set(hist)))
        else:
            rest.extend(seq)
    return rest, users


def validation_parts(interactions: Sequence[Any], *, rounds: int, folds: int, tune_users: int, seed: int,
                     ) -> list[tuple[list[Any], list[ValidationUser]]]:
    """The validation data: per round (``back`` = 0, 1, ...) the eligible users (a seeded sample of at
    most ``tune_users``) in ``folds`` seeded user folds; each part holds out the targets of one fold
    only and keeps every other interaction, so the sources of a part see almost as much data as the
    served ones (``folds = 1``: every user's target held out at once)."""
    parts: list[tuple[list[Any], list[ValidationUser]]] = []
    for back in range(max(1, rounds)):
        _, users = validation_split(interactions, back=back)
        if 0 < tune_users < len(users):
            users = [users[i] for i in sorted(random.Random(seed + back).sample(range(len(users)), tune_users))]
        if not users:
            if not parts:
                parts.append((list(interactions), []))
            continue
        n_folds = max(1, min(folds, len(users)))
        fold = np.random.default_rng(seed + 100 + back).permutation(len(users)) % n_folds
        for f in range(n_folds):
            chosen = {u.user for u, g in zip(users, fold, strict=True) if g == f}
            rest, held = validation_split(interactions, back=back, only=chosen)
            parts.append((rest, held))
    return parts


def _list_ndcg(lists: Sequence[Candidates], users: Sequence[ValidationUser], k: int) -> float:
    total = 0.0
    for lst, u in zip(lists, users, strict=True):
        for pos, (a, _) in enumerate(lst[:k]):
            if a == u.target:
                total += 1.0 / np.log2(pos + 2)
                break
    return total / max(1, len(users))


SourceFactory = Callable[..., CandidateSource]


def default_factories(*, vectors: tuple[Sequence[str], np.ndarray] | None = None) -> dict[str, SourceFactory]:
    """The sources the core uses: co-review, transitions (tuned and wide), lexical, embedding (with
    vectors), popular."""
    out: dict[str, SourceFactory] = {
        "coreview": CoReviewSource,
        "transitions": TransitionSource,
        # a second, wider view of the sequence: two steps ahead and behind, slower decay (fixed); next
        # to the tuned one it lets the blend mix short- and longer-range order (Toys: +0.004 HR@10)
        "transitions_wide": lambda **kw: TransitionSource(window=2, decay=0.5, backward_weight=0.5),
        "lexical": LexicalSource,
        # the same TF-IDF over what reviewers wrote about each item (magazines: items without titles)
        "reviews": ReviewTextSource,
        "popular": PopularSource,
    }
    if vectors is not None:
        asins, matrix = vectors
        out["embedding"] = lambda **kw: EmbeddingSource(asins=asins, vectors=matrix, **kw)
    return out


@dataclass
class RankingCore:
    """Fitted sources + item facts + the chosen model (see the module docstring)."""

    builder: FeatureBuilder
    model: BlendModel | LambdaRanker | EnsembleModel
    popular: PopularSource
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    mmr_lambda: float = 1.0  # diversity after ranking (1 = the model's order)
    similarity: ItemSimilarity | None = None

    @property
    def names(self) -> list[str]:
        return self.builder.names

    @classmethod
    def fit(cls, *, interactions: Sequence[Any], items: Iterable[Any] = (), k: int = 10,
            factories: Mapping[str, SourceFactory] | None = None, tune_users: int = 3000,
            min_queries: int = 100, seed: int = 13, depth: int = 100, popular_depth: int = 50,
            rounds: int = 1, source_folds: int = 5, model_folds: int = 2, version: str = "",
            live: RankingCore | None = None, max_diversity_cost: float = 0.01,
            stored: StoredNeighbours | None = None) -> RankingCore:
        t0 = time.perf_counter()
        items = list(items)
        factories = dict(factories or default_factories())
        # validation parts: per round (the newest item of each user; ``rounds`` = 2 adds the one before
        # it) ``source_folds`` user folds, each holding out its own users' targets only
        data = validation_parts(interactions, rounds=rounds, folds=source_folds, tune_users=tune_users, seed=seed)
        n_users = sum(len(u) for _, u in data)
        chosen: dict[str, dict[str, Any]] = {}
        tuned: dict[str, list[CandidateSource]] = {}
        source_ndcg: dict[str, float] = {}
        listed: dict[str, bool] = {}
        for name, factory in factories.items():
            grid = SOURCE_GRID.get(name, [{}])
            best: tuple[float, dict[str, Any], list[CandidateSource]] | None = None
            bases: list[CandidateSource | None] = [None] * len(data)
            for params in grid:
                total, srcs = 0.0, []
                for r, (rest, users) in enumerate(data):
                    if name in REFIT_PARAMS:
                        src = factory(**params)
                        src.fit(interactions=rest, items=items)
                    else:
                        base = bases[r]
                        if base is None:
                            base = factory()
                            base.fit(interactions=rest, items=items)
                            bases[r] = base
                        src = with_params(base, **params)
                    want = popular_depth if name == "popular" else k
                    lists = [src.candidates(history=u.history, k=want, exclude=u.seen) for u in users]
                    total += _list_ndcg(lists, users, k) * len(users)
                    listed[name] = listed.get(name, False) or any(lists)
                    srcs.append(src)
                score = total / max(1, n_users)
                if best is None or score > best[0] + 1e-12:
                    best = (score, params, srcs)
            assert best is not None
            source_ndcg[name], chosen[name], tuned[name] = best
        # drop sources that list nothing for anybody (no text: lexical / embedding are silent)
        names = [n for n in factories if n == "popular" or listed.get(n)]
        cands: list[UserCandidates] = []
        targets: list[str] = []
        query_user: list[str] = []
        query_sim: list[ItemSimilarity] = []
        for r, (rest, users) in enumerate(data):
            builder = FeatureBuilder(sources={n: tuned[n][r] for n in names},
                                     facts=ItemFacts.fit(interactions=rest, items=items), depth=depth,
                                     popular_depth=popular_depth)
            cands += [builder.build(history=u.history, exclude=u.seen) for u in users]
            targets += [u.target for u in users]
            query_user += [u.user for u in users]
            query_sim += [ItemSimilarity(builder.sources)] * len(users)
        q = Queries.stack(cands, targets, len(builder.feature_names))
        model, selection = select_model(q, names=names, feature_names=builder.feature_names, k=k,
                                        min_queries=min_queries, seed=seed, query_user=query_user,
                                        folds=model_folds)
        promotion = promote(model, selection, live=live, queries=q, feature_names=builder.feature_names, k=k)
        if not promotion["promoted"]:
            assert live is not None
            model = live.model
        # MMR's lambda: the cost of diversity is measured twice, on the out-of-fold scores (models
        # trained on part of the queries, blunter than the served one: reordering their top looks
        # cheap) and on the served model's own scores of the same queries (sharper than on new users);
        # the most diverse lambda within the budget on both is kept (on Toys the out-of-fold scores
        # alone allowed 0.85, which cost 9 of 323 test hits; with the served scores 0.95, 1 hit)
        oof = selection.out_of_fold if promotion["promoted"] else None
        mmr_lambda, diversity = _choose_diversity(q, model.predict(q.matrix), cands, targets, query_sim, k=k,
                                                  max_cost=max_diversity_cost)
        if oof is not None and diversity.get("similarity") != "none":
            _, div_oof = _choose_diversity(q, oof, cands, targets, query_sim, k=k, max_cost=max_diversity_cost)
            both = set(diversity["allowed"]) & set(div_oof["allowed"])
            mmr_lambda = min(both) if both else 1.0
            diversity = {**div_oof, "lambda": mmr_lambda, "scores": "out-of-fold and served",
                         "served_scores": {n: diversity[n] for n in ("allowed", "validation_ndcg", "validation_lost")}}
        # refit on everything for serving
        final: dict[str, CandidateSource] = {}
        from_lists: list[str] = []
        for name in names:
            params = chosen[name]
            src = factories[name](**params) if name in REFIT_PARAMS else factories[name]()
            if stored is not None and name not in REFIT_PARAMS and load_into(src, stored):
                from_lists.append(name)
            else:
                src.fit(interactions=interactions, items=items)
            final[name] = src if name in REFIT_PARAMS else with_params(src, **params)
        serving = FeatureBuilder(sources=final, facts=ItemFacts.fit(interactions=interactions, items=items),
                                 depth=depth, popular_depth=popular_depth)
        popular = final.get("popular")
        assert isinstance(popular, PopularSource)
        report = {
            "interactions": len(interactions),
            "validation_users": n_users,
            "validation_rounds": max(1, rounds),
            "validation_parts": len(data),
            "reachable_users": int((q.target >= 0).sum()),
            "source_params": chosen,
            "source_validation_ndcg": {n: round(s, 6) for n, s in source_ndcg.items()},
            "sources": names,
            "model": model.describe(names),
            "selection": _selection_dict(selection),
            "promotion": promotion,
            "diversity": diversity,
            "served_from_lists": _lists_report(stored, from_lists),
            "fit_seconds": round(time.perf_counter() - t0, 2),
        }
        return cls(builder=serving, model=model, popular=popular, params=chosen, report=report, version=version,
                   mmr_lambda=mmr_lambda, similarity=ItemSimilarity(final))

    def with_stored(self, stored: StoredNeighbours) -> RankingCore:
        """The same core (model, parameters, facts) with its co-review and transition sources served
        from ``stored`` (lists computed on the data this core was fitted on); the model is untouched.
        Sources the lists do not cover stay as they are."""
        sources: dict[str, CandidateSource] = {}
        from_lists: list[str] = []
        for name, src in self.builder.sources.items():
            fresh = copy.copy(src)  # the scoring parameters stay; use_lists replaces the matrices
            if load_into(fresh, stored):
                sources[name] = fresh
                from_lists.append(name)
            else:
                sources[name] = src
        builder = copy.copy(self.builder)
        builder.sources = sources
        report = {**self.report, "served_from_lists": _lists_report(stored, from_lists)}
        return RankingCore(builder=builder, model=self.model, popular=self.popular, params=self.params,
                           report=report, version=self.version, mmr_lambda=self.mmr_lambda,
                           similarity=ItemSimilarity(sources))

    @property
    def served_lists_version(self) -> int | None:
        """The model version whose stored lists serve some source (None: all fitted in-process)."""
        served = self.report.get("served_from_lists") or {}
        return served.get("version") if served.get("sources") else None

    @property
    def validation_ndcg(self) -> float:
        sel = self.report.get("selection", {})
        cross = sel.get("cross_fit_ndcg") or {}
        return float(cross.get(sel.get("chosen"), sel.get("in_sample_ndcg", {}).get(sel.get("chosen"), 0.0)))

    def candidates_for(self, *, history: Sequence[str], exclude: Container[str] = (),
                       extra: Mapping[str, Candidates] | None = None) -> tuple[UserCandidates, np.ndarray]:
        uc = self.builder.build(history=history, exclude=exclude, extra=extra)
        return uc, self.model.predict(uc.matrix)

    def rank(self, *, history: Sequence[str], k: int, exclude: Container[str] = (),
             extra: Mapping[str, Candidates] | None = None, diversify_lists: bool = True) -> list[Ranked]:
        """The user's top ``k``: by the model's score (ties by popularity then ``parent_asin``), then
        MMR with the lambda chosen on validation (``diversify_lists=False``: the model's order)."""
        if not history:
            return [Ranked(a, float(s), "popular") for a, s in self.popular.candidates(k=k, exclude=exclude)]
        uc, scores = self.candidates_for(history=history, exclude=exclude, extra=extra)
        if not uc.asins:
            return []
        order = ranked_order(scores, uc.popularity)
        if diversify_lists and self.mmr_lambda < 1.0 and self.similarity is not None:
            asins = [uc.asins[i] for i in order]
            order = order[diversify(asins, scores[order], self.similarity, k, self.mmr_lambda)]
        return [Ranked(uc.asins[i], float(scores[i]), uc.sources[i]) for i in order[:k]]


def ranked_order(scores: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Positions by score descending, ties by popularity descending, then position (asin order)."""
    return np.lexsort((np.arange(len(scores)), -popularity, -scores))


def _choose_diversity(q: Queries, scores: np.ndarray, cands: Sequence[UserCandidates], targets: Sequence[str],
                      sims: Sequence[ItemSimilarity], *, k: int, max_cost: float) -> tuple[float, dict[str, Any]]:
    """MMR's lambda on the validation queries (only those whose target is a candidate can change)."""
    if not sims or all(s.kind == "none" for s in sims):
        return 1.0, {"lambda": 1.0, "similarity": "none"}
    offsets = np.concatenate([[0], np.cumsum(q.sizes)])
    ranked = []
    for g, (uc, target, sim) in enumerate(zip(cands, targets, sims, strict=True)):
        if q.target[g] < 0:
            continue
        sc = scores[offsets[g]:offsets[g + 1]]
        order = ranked_order(sc, uc.popularity)
        ranked.append(([uc.asins[i] for i in order], sc[order], target, sim))
    lam, figures = choose_lambda(ranked, k=k, max_cost=max_cost, n_queries=len(q))
    figures["similarity"] = sims[0].kind
    return lam, figures


def promote(model: BlendModel | LambdaRanker | EnsembleModel, selection: Selection, *, live: RankingCore | None,
            queries: Queries, feature_names: Sequence[str], k: int) -> dict[str, Any]:
    """Whether the new model replaces the live one: only if its validation NDCG@k (cross-fitted) is
    not worse than the live model's on the same new validation queries. A live model over other
    features (another set of sources) cannot be scored on them and is replaced."""
    new = selection.cross_fit_ndcg.get(selection.chosen, selection.in_sample_ndcg.get(selection.chosen, 0.0))
    if live is None or list(live.builder.feature_names) != list(feature_names):
        return {"promoted": True, "new_ndcg": new, "live_ndcg": None, "live_version": live.version if live else None}
    live_score = round(ndcg_at(queries, live.model.predict(queries.matrix), k), 6)
    return {"promoted": bool(new >= live_score), "new_ndcg": new, "live_ndcg": live_score,
            "live_version": live.version}


def _lists_report(stored: StoredNeighbours | None, names: Sequence[str]) -> dict[str, Any]:
    if stored is None or not names:
        return {"version": None, "sources": []}
    return {"version": stored.version, "sources": list(names)}


def _selection_dict(s: Selection) -> dict[str, Any]:
    return {"chosen": s.chosen, "cross_fit_ndcg": s.cross_fit_ndcg, "cross_fit_hit": s.cross_fit_hit,
            "in_sample_ndcg": s.in_sample_ndcg,
            "trees": s.trees, "folds": s.folds, "margins": s.margins}

