"""Reference strategies: the retriever's candidate sources alone and blended (issue 13's baselines).

* ``popular_count`` — most reviewed items (``shared.popularity.popular_by_count``); its window and
  rating floor are chosen on the validation pair, and every strategy below fills from it.
* ``itemknn`` — co-review neighbours (cosine), the user's whole recent history weighted equally.
* ``itemknn_seq`` — co-review neighbours with a recency decay plus "reviewed next" transitions from
  the last items, equal weights on max-normalised scores (fixed parameters, not tuned).
* ``tfidf`` — TF-IDF of the item text against the recency-weighted history.
* ``sources_blend`` — co-review, transitions, lexical and popular, each source's decay and then the
  blend's weights and normalisation tuned on ``tune_train -> validation`` (NDCG@k), then refit on
  ``train``. Coordinate ascent starts from the best single source, so on validation the blend is never
  worse than any of them.

Every strategy excludes the user's training items and returns ``k`` items (the blended ones, then
popular). Users without history get ``popular_count``. Sources are fitted once per part of the split
and shared between strategies through ``ctx.cache``.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.retriever.sources import (
    CandidateSource,
    CoReviewSource,
    LexicalSource,
    PopularSource,
    TransitionSource,
    WeightedBlend,
    with_params,
)
from services.retriever.sources.base import Candidates, user_sequences
from services.retriever.sources.blend import DEFAULT_DEPTH, NORMALISATIONS, fill
from services.retriever.sources.tuning import FallbackRanks, coordinate_ascent, ndcg, user_case
from tools.evaluation.context import EvalContext
from tools.evaluation.split import Interaction
from tools.evaluation.strategies.base import OfflineStrategy, StageClock, UserRecs

#: Window (days) x rating floor grid for ``popular_count`` (None = all time / any rating).
POPULAR_GRID: list[dict[str, Any]] = [{"window_days": w, "min_rating": r}
                                      for w in (None, 365.0, 90.0, 30.0) for r in (None, 4.0)]
#: Scoring parameters tried per source in ``sources_blend`` (fitting is shared by all of them).
SOURCE_GRID: dict[str, list[dict[str, Any]]] = {
    "coreview": [{"decay": d, "history_length": 50} for d in (1.0, 0.8, 0.6, 0.4, 0.25)],
    "transitions": [{"decay": d, "backward_weight": b, "forward_weight": 1.0, "history_length": 5}
                    for d in (1.0, 0.5, 0.25, 0.1) for b in (0.0, 0.5, 1.0)],
    "lexical": [{"decay": d, "history_length": 50} for d in (1.0, 0.8, 0.5, 0.25)],
}
BLEND_SOURCES = ("coreview", "transitions", "lexical", "popular")
TUNE_USERS = 3000  # validation users sampled for tuning (seeded); all of them when fewer

FACTORIES: dict[str, type] = {"coreview": CoReviewSource, "transitions": TransitionSource, "lexical": LexicalSource}


def _part(ctx: EvalContext, part: str) -> list[Interaction]:
    return ctx.split.train if part == "train" else ctx.split.tune_train


def fitted_source(ctx: EvalContext, part: str, name: str) -> Any:
    """The ``name`` source fitted on ``part`` ("train" | "tune") once per run (its default fit params)."""
    key = f"reference:{part}:{name}"
    if key not in ctx.cache:
        source = FACTORIES[name]()
        source.fit(interactions=_part(ctx, part), items=ctx.catalog.items.values())
        ctx.cache[key] = source
    return ctx.cache[key]


def validation_cases(ctx: EvalContext) -> list[tuple[list[str], str, set[str]]]:
    """(tune_train history, held-out validation item, seen set) for a seeded sample of validation users."""
    key = "reference:validation"
    if key not in ctx.cache:
        n = int(ctx.cache.get("options", {}).get("reference_tune_users", TUNE_USERS))
        users = sorted(ctx.split.validation)
        if 0 < n < len(users):
            users = sorted(random.Random(ctx.seed).sample(users, n))
        hist = user_sequences(ctx.split.tune_train)
        ctx.cache[key] = [(hist.get(u, []), ctx.split.validation[u][0].parent_asin, set(hist.get(u, [])))
                          for u in users]
    cases: list[tuple[list[str], str, set[str]]] = ctx.cache[key]
    return cases


def _lists(source: CandidateSource, cases: Sequence[tuple[list[str], str, set[str]]], depth: int,
           ) -> list[Candidates]:
    return [source.candidates(history=h, k=depth, exclude=seen) for h, _, seen in cases]


def _single_ndcg(lists: Sequence[Candidates], cases: Sequence[tuple[list[str], str, set[str]]],
                 fallback: FallbackRanks, k: int) -> float:
    built = [user_case([lst], target=t, seen=seen, fallback=fallback, normalisation="max")
             for lst, (_, t, seen) in zip(lists, cases, strict=True)]
    return ndcg(built, np.ones(1), k)


@dataclass
class TunedPopular:
    params: dict[str, Any]
    validation_ndcg: float
    tune: PopularSource  # fitted on tune_train (the blend's tuning fallback)
    train: PopularSource  # fitted on train (what users get)


def tuned_popular(ctx: EvalContext) -> TunedPopular:
    """``popular_count``'s window and floor, chosen on validation once per run."""
    key = "reference:popular"
    if key in ctx.cache:
        tuned: TunedPopular = ctx.cache[key]
        return tuned
    cases = validation_cases(ctx)
    best: tuple[float, dict[str, Any], PopularSource] | None = None
    for params in POPULAR_GRID:
        source = PopularSource(**params)
        source.fit(interactions=ctx.split.tune_train)
        if not source.ranked:
            continue
        score = _single_ndcg(_lists(source, cases, DEFAULT_DEPTH), cases, FallbackRanks.of(source.ranked), ctx.k)
        if best is None or score > best[0] + 1e-12:
            best = (score, params, source)
    if best is None:  # nothing to tune on: all time, any rating
        params, score, tune = dict(POPULAR_GRID[0]), 0.0, PopularSource()
        tune.fit(interactions=ctx.split.tune_train)
    else:
        score, params, tune = best
    train = PopularSource(**params)
    train.fit(interactions=ctx.split.train)
    ctx.cache[key] = TunedPopular(params=dict(params), validation_ndcg=score, tune=tune, train=train)
    return ctx.cache[key]


class ReferenceStrategy(OfflineStrategy):
    """A :class:`WeightedBlend` of fitted sources, popular for users without history or candidates."""

    explain_default = "template"
    batch_size = 256

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}
        self.blend: WeightedBlend | None = None
        self.popular: TunedPopular | None = None

    def build(self, ctx: EvalContext, popular: PopularSource) -> WeightedBlend | None:
        """The strategy's blend over sources fitted on ``train`` (None: popular for everybody)."""
        return None

    def fit(self, ctx: EvalContext) -> None:
        self.popular = tuned_popular(ctx)
        self.blend = self.build(ctx, self.popular.train)

    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        assert self.popular is not None, "fit first"
        fallback = self.popular.train
        out = []
        for user in user_ids:
            clock = StageClock()
            with clock.stage("rank"):
                history = [i.parent_asin for i in ctx.split.history(user)]
                seen = ctx.seen(user)
                blended = (self.blend.blended(history=history, exclude=seen)
                           if self.blend is not None and history else [])
                top = fill(blended[:ctx.k], fallback, history=history, k=ctx.k, exclude=seen)
            out.append(UserRecs(user_id=user, items=[a for a, _ in top], scores=[s for _, s in top],
                                cold=not blended, stage_seconds=clock.per_user(1)))
        return out

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.popular is not None:
            out["popular"] = {**self.popular.params, "validation_ndcg": round(self.popular.validation_ndcg, 6)}
        if self.blend is not None:
            out["blend"] = self.blend.describe()
        return out


class PopularCountStrategy(ReferenceStrategy):
    name = "popular_count"
    personalized = False


class ItemKnnStrategy(ReferenceStrategy):
    name = "itemknn"

    def build(self, ctx: EvalContext, popular: PopularSource) -> WeightedBlend:
        coreview = with_params(fitted_source(ctx, "train", "coreview"), decay=1.0, history_length=50)
        return WeightedBlend(sources={"coreview": coreview}, weights={"coreview": 1.0}, fallback=popular)


class ItemKnnSeqStrategy(ReferenceStrategy):
    name = "itemknn_seq"

    def build(self, ctx: EvalContext, popular: PopularSource) -> WeightedBlend:
        coreview = with_params(fitted_source(ctx, "train", "coreview"), decay=0.8, history_length=50)
        transitions = with_params(fitted_source(ctx, "train", "transitions"), decay=0.5, history_length=5,
                                  forward_weight=1.0, backward_weight=0.5)
        return WeightedBlend(sources={"coreview": coreview, "transitions": transitions},
                             weights={"coreview": 1.0, "transitions": 1.0}, fallback=popular)


class TfidfStrategy(ReferenceStrategy):
    name = "tfidf"

    def build(self, ctx: EvalContext, popular: PopularSource) -> WeightedBlend:
        lexical = with_params(fitted_source(ctx, "train", "lexical"), decay=0.8, history_length=50)
        return WeightedBlend(sources={"lexical": lexical}, weights={"lexical": 1.0}, fallback=popular)


class SourcesBlendStrategy(ReferenceStrategy):
    name = "sources_blend"

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(options=options)
        self.tuning: dict[str, Any] = {}

    def build(self, ctx: EvalContext, popular: PopularSource) -> WeightedBlend:
        assert self.popular is not None
        cases = validation_cases(ctx)
        fallback = FallbackRanks.of(self.popular.tune.ranked)
        depth = DEFAULT_DEPTH
        chosen: dict[str, dict[str, Any]] = {}
        lists: dict[str, list[Candidates]] = {}
        singles: dict[str, float] = {}
        grid_scores: dict[str, list[dict[str, Any]]] = {}
        for name, grid in SOURCE_GRID.items():
            base = fitted_source(ctx, "tune", name)
            best: tuple[float, dict[str, Any], list[Candidates]] | None = None
            for params in grid:
                got = _lists(with_params(base, **params), cases, depth)
                score = _single_ndcg(got, cases, fallback, ctx.k)
                grid_scores.setdefault(name, []).append({**params, "validation_ndcg": round(score, 6)})
                if best is None or score > best[0] + 1e-12:
                    best = (score, params, got)
            assert best is not None
            singles[name], chosen[name], lists[name] = best
        lists["popular"] = _lists(self.popular.tune, cases, depth)
        names = list(BLEND_SOURCES)
        results = []
        for norm in NORMALISATIONS:
            built = [user_case([lists[n][i] for n in names], target=t, seen=seen, fallback=fallback,
                               normalisation=norm) for i, (_, t, seen) in enumerate(cases)]
            results.append((norm, coordinate_ascent(built, n_sources=len(names), k=ctx.k)))
        norm, best_result = max(results, key=lambda r: r[1].score)  # first (max) wins ties
        weights = {n: float(w) for n, w in zip(names, best_result.weights, strict=True)}
        if not cases:  # no validation user: every source, equal weights
            weights = dict.fromkeys(names, 1.0)
        sources: dict[str, CandidateSource] = {
            n: with_params(fitted_source(ctx, "train", n), **chosen[n]) for n in names if n != "popular"}
        sources["popular"] = popular
        self.tuning = {
            "validation_users": len(cases),
            "validation_ndcg": round(best_result.score, 6),
            "single_source_validation_ndcg": {**{n: round(s, 6) for n, s in singles.items()},
                                              "popular": round(self.popular.validation_ndcg, 6)},
            "source_params": chosen,
            "start": names[best_result.start],
            "normalisation_validation_ndcg": {n: round(r.score, 6) for n, r in results},
            "source_grid": grid_scores,
        }
        return WeightedBlend(sources=sources, weights=weights, fallback=popular, depth=depth, normalisation=norm)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tuning": self.tuning}
