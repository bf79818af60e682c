"""Blend tuning: the fast validation scorer reproduces WeightedBlend.rank, and the ascent never loses
to the best single source."""
from __future__ import annotations

import math
import random

import numpy as np

from services.retriever.sources import (
    CandidateSource,
    CoReviewSource,
    LexicalSource,
    PopularSource,
    TransitionSource,
    WeightedBlend,
)
from services.retriever.sources.base import user_sequences
from services.retriever.sources.tuning import FallbackRanks, coordinate_ascent, ndcg, target_position, user_case
from shared.amazon import ItemIn, ReviewIn
from tools.evaluation.split import Interaction, leave_last_out
from tools.synth import generate

NAMES = ("coreview", "transitions", "lexical", "popular")


def _synth_parts() -> tuple[dict[str, CandidateSource], list[tuple[list[str], str, set[str]]], PopularSource]:
    raw_reviews, raw_meta, _ = generate(users=600, items=80, seed=11)
    reviews = [Interaction.from_review(ReviewIn.model_validate(r)) for r in raw_reviews]
    items = [ItemIn.model_validate(m) for m in raw_meta]
    split = leave_last_out(reviews)
    pop = PopularSource()
    sources: dict[str, CandidateSource] = {"coreview": CoReviewSource(), "transitions": TransitionSource(),
                                           "lexical": LexicalSource(), "popular": pop}
    for s in sources.values():
        s.fit(interactions=split.tune_train, items=items)
    hist = user_sequences(split.tune_train)
    cases = [(hist.get(u, []), split.validation[u][0].parent_asin, set(hist.get(u, [])))
             for u in sorted(split.validation)]
    return sources, cases, pop


def test_fast_position_matches_the_blend_ranking() -> None:
    sources, cases, pop = _synth_parts()
    fallback = FallbackRanks.of(pop.ranked)
    rng = random.Random(5)
    depth, k = 15, 10  # a shallow depth so that the popular fill matters
    for _ in range(4):
        weights = np.asarray([rng.choice([0.0, 0.3, 1.0, 2.0]) for _ in NAMES])
        if not weights.any():
            weights[0] = 1.0
        for norm in ("max", "rank"):
            blend = WeightedBlend(sources=sources, weights=dict(zip(NAMES, weights, strict=True)), fallback=pop,
                                  depth=depth, normalisation=norm)
            for history, target, seen in cases:
                lists = [sources[n].candidates(history=history, k=depth, exclude=seen) for n in NAMES]
                case = user_case(lists, target=target, seen=seen, fallback=fallback, normalisation=norm)
                ranked = [a for a, _ in blend.rank(history=history, k=k, exclude=seen)]
                expected = ranked.index(target) if target in ranked else None
                assert target_position(case, weights, k) == expected, (weights, norm, target, ranked)


def test_ascent_is_never_worse_than_the_best_single_source() -> None:
    sources, cases, pop = _synth_parts()
    fallback = FallbackRanks.of(pop.ranked)
    built = [user_case([sources[n].candidates(history=h, k=50, exclude=seen) for n in NAMES], target=t,
                       seen=seen, fallback=fallback, normalisation="max") for h, t, seen in cases]
    singles = [ndcg(built, np.eye(len(NAMES))[j], 10) for j in range(len(NAMES))]
    result = coordinate_ascent(built, n_sources=len(NAMES), k=10)
    assert result.score >= max(singles)
    assert result.score == ndcg(built, result.weights, 10)
    assert NAMES[result.start] == NAMES[int(np.argmax(singles))]


def test_ndcg_of_one_relevant_item() -> None:
    case = user_case([[("a", 2.0), ("b", 1.0)]], target="b", seen=set(), fallback=FallbackRanks.of([]),
                     normalisation="max")
    assert ndcg([case], np.ones(1), 10) == 1 / math.log2(3)
    assert ndcg([case], np.ones(1), 1) == 0.0
    seen = user_case([[("a", 2.0)]], target="z", seen={"z"}, fallback=FallbackRanks.of([("z", 9.0)]),
                     normalisation="max")
    assert target_position(seen, np.ones(1), 10) is None
