"""The ranking core on planted tastes: it finds what each source carries and combines them.

Six clusters of ten items. Half the users walk a fixed chain inside a cluster (what transitions
carry); the other half review random items of one cluster in random order (what co-review and content
carry); everybody also reviews a few of the globally popular items. Pure logic: no database.
"""
from __future__ import annotations

import random

import pytest

from services.retriever.ranking import RankingCore, default_factories
from services.retriever.ranking.core import validation_split
from shared.amazon import ItemIn
from tests.retriever.sources.helpers import log

CLUSTERS, PER = 6, 10
POPULAR = [f"pop{i}" for i in range(4)]


def planted(seed: int = 7, users: int = 360) -> tuple[dict[str, list[str]], list[ItemIn]]:
    rng = random.Random(seed)
    seqs: dict[str, list[str]] = {}
    for u in range(users):
        c = rng.randrange(CLUSTERS)
        chain = [f"c{c}i{i}" for i in range(PER)]
        if u % 2 == 0:  # a walk along the cluster's chain
            start = rng.randrange(PER - 5)
            own = chain[start:start + 5]
        else:  # a bag of the cluster's items, in no order
            own = rng.sample(chain, 5)
        seq = list(own)
        for p in rng.sample(POPULAR, 2):
            seq.insert(rng.randrange(len(seq)), p)
        seqs[f"u{u:03d}"] = seq
    items = [{"parent_asin": f"c{c}i{i}", "title": f"{word} product number {i}",
              "description": [f"{word} {word}s for every {word} lover"]}
             for c, word in enumerate(["garden", "kitchen", "camera", "violin", "bicycle", "perfume"])
             for i in range(PER)]
    items += [{"parent_asin": p, "title": f"Gift card {p}"} for p in POPULAR]
    return seqs, [ItemIn.model_validate(it) for it in items]


@pytest.fixture(scope="module")
def fitted() -> tuple[RankingCore, dict[str, list[str]]]:
    seqs, items = planted()
    return RankingCore.fit(interactions=log(seqs), items=items, k=10, min_queries=50), seqs


def test_validation_split_holds_out_each_users_newest_item() -> None:
    rest, users = validation_split(log({"a": ["x", "y", "z"], "b": ["q"]}))
    assert [(u.user, u.history, u.target) for u in users] == [("a", ["x", "y"], "z")]
    assert sorted(r.parent_asin for r in rest) == ["q", "x", "y"]


def test_every_source_is_used_and_tuned(fitted: tuple[RankingCore, dict[str, list[str]]]) -> None:
    core, _ = fitted
    rep = core.report
    assert set(rep["sources"]) == {"coreview", "transitions", "transitions_wide", "lexical", "popular"}
    # transitions alone find the chain walkers' next item: well above popular
    nd = rep["source_validation_ndcg"]
    assert nd["transitions"] > 2 * nd["popular"] and nd["coreview"] > 2 * nd["popular"], nd


def test_the_chosen_model_beats_every_single_source_on_validation(
        fitted: tuple[RankingCore, dict[str, list[str]]]) -> None:
    core, _ = fitted
    sel = core.report["selection"]
    cross = sel["cross_fit_ndcg"]
    best_single = max(v for n, v in sel["in_sample_ndcg"].items() if n.startswith("single:"))
    assert cross[sel["chosen"]] > best_single + 0.01, sel
    assert core.validation_ndcg == cross[sel["chosen"]]
    # the HR@10 of the same out-of-fold scores is reported beside the NDCG@10 the choice is made on
    hits = sel["cross_fit_hit"]
    assert set(hits) == set(cross) and all(0.0 <= v <= 1.0 for v in hits.values()), hits
    assert all(hits[n] >= cross[n] for n in cross)  # one relevant item: NDCG@10 <= HR@10 per query


def test_rank_excludes_seen_fills_k_and_names_sources(fitted: tuple[RankingCore, dict[str, list[str]]]) -> None:
    core, seqs = fitted
    history = ["c2i0", "c2i1", "c2i2"]
    top = core.rank(history=history, k=10, exclude=set(history))
    assert len(top) == 10 and not set(history) & {r.parent_asin for r in top}
    assert top[0].parent_asin == "c2i3"  # the chain's next item
    assert all(r.source in {"coreview", "transitions", "transitions_wide", "lexical", "popular"} for r in top)
    plain = core.rank(history=history, k=10, exclude=set(history), diversify_lists=False)
    assert [r.score for r in plain] == sorted((r.score for r in plain), reverse=True)


def test_diversity_is_bought_within_its_validation_budget(fitted: tuple[RankingCore, dict[str, list[str]]]) -> None:
    from services.retriever.ranking.diversity import intra_list_similarity

    core, _ = fitted
    div = core.report["diversity"]
    nd = {float(k): v for k, v in div["validation_ndcg"].items()}
    assert core.mmr_lambda == div["lambda"] < 1.0  # planted clusters: diversity is cheap here
    assert nd[core.mmr_lambda] >= (1 - div["max_cost"]) * nd[1.0]
    assert div["intra_list_similarity"][str(core.mmr_lambda)] < div["intra_list_similarity"]["1.0"]
    # within the budget on the out-of-fold scores and on the served model's own: the most diverse such
    served = div["served_scores"]
    assert core.mmr_lambda == min(set(div["allowed"]) & set(served["allowed"]))
    snd = {float(k): v for k, v in served["validation_ndcg"].items()}
    assert snd[core.mmr_lambda] >= (1 - div["max_cost"]) * snd[1.0]
    history = ["c2i0", "c5i3", "c2i1"]
    assert core.similarity is not None
    mixed = [r.parent_asin for r in core.rank(history=history, k=10, exclude=set(history))]
    plain = [r.parent_asin for r in core.rank(history=history, k=10, exclude=set(history), diversify_lists=False)]
    assert mixed != plain and mixed[0] == plain[0]  # the best item stays first
    # the user's two clusters both show up in the diversified list, not only the recent one
    def clusters(asins: list[str]) -> set[str]:
        return {a[:2] for a in asins[:5] if a.startswith("c")}
    assert clusters(mixed) == {"c2", "c5"} and len(clusters(mixed)) >= len(clusters(plain))
    assert intra_list_similarity(mixed, core.similarity) > 0


def test_a_user_without_history_gets_popular(fitted: tuple[RankingCore, dict[str, list[str]]]) -> None:
    core, _ = fitted
    top = core.rank(history=[], k=3)
    assert {r.parent_asin for r in top} <= set(POPULAR) and {r.source for r in top} == {"popular"}


def test_without_item_text_the_collaborative_sources_carry_it() -> None:
    seqs, items = planted(seed=11)
    bare = [ItemIn(parent_asin=it.parent_asin) for it in items]
    core = RankingCore.fit(interactions=log(seqs), items=bare, k=10, min_queries=50)
    assert "lexical" not in core.report["sources"]
    nd = core.report["source_validation_ndcg"]
    assert core.validation_ndcg > 2 * nd["popular"], core.report


def test_without_item_metadata_what_reviewers_wrote_carries_content() -> None:
    """Items with no metadata at all, reviews that speak of their item's cluster: the ``reviews``
    source joins (lexical cannot: no item text), finds the cluster, and the core uses it."""
    from tools.evaluation.split import Interaction

    seqs, items = planted(seed=5)
    words = ["garden", "kitchen", "camera", "violin", "bicycle", "perfume"]
    rng = random.Random(3)
    reviews = [Interaction(user_id=r.user_id, parent_asin=r.parent_asin, rating=r.rating, timestamp=r.timestamp,
                           text=(f"my {words[int(r.parent_asin[1])]} kit, a great {words[int(r.parent_asin[1])]} "
                                 f"{rng.choice(['buy', 'find', 'gift'])}" if r.parent_asin.startswith("c")
                                 else "a gift card"))
               for r in log(seqs)]
    bare = [ItemIn(parent_asin=it.parent_asin) for it in items]
    core = RankingCore.fit(interactions=reviews, items=bare, k=10, min_queries=50)
    assert "reviews" in core.report["sources"] and "lexical" not in core.report["sources"]
    nd = core.report["source_validation_ndcg"]
    assert nd["reviews"] > 2 * nd["popular"], nd
    assert core.validation_ndcg >= max(nd.values()), core.report
    user = next(u for u, seq in seqs.items() if seq[0].startswith("c"))
    cluster = seqs[user][0][:2]
    top = core.rank(history=[a for a in seqs[user] if a.startswith(cluster)][:2], k=5,
                    exclude=set(seqs[user]), diversify_lists=False)
    assert sum(r.parent_asin.startswith(cluster) for r in top) >= 3, top


def test_embedding_source_joins_when_vectors_are_given() -> None:
    import numpy as np

    seqs, items = planted(seed=3)
    asins = [it.parent_asin for it in items]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLUSTERS + 1, 16))
    vecs = np.stack([centres[int(a[1]) if a.startswith("c") else CLUSTERS] + 0.1 * rng.normal(size=16)
                     for a in asins])
    core = RankingCore.fit(interactions=log(seqs), items=[ItemIn(parent_asin=a) for a in asins], k=10,
                           factories=default_factories(vectors=(asins, vecs)), min_queries=50)
    assert "embedding" in core.report["sources"]
    assert core.report["source_validation_ndcg"]["embedding"] > core.report["source_validation_ndcg"]["popular"]


def test_the_served_path_reads_the_history_oldest_first(fitted: tuple[RankingCore, dict[str, list[str]]]) -> None:
    """The retriever's signals hold the newest review first; the core must still see the walk's end."""
    from services.retriever.candidates import HistoryEntry, RankingParams, UserSignals, ranked_candidates
    from services.retriever.catalog import Catalog
    from services.retriever.index import IndexConfig, IndexSnapshot

    core, seqs = fitted
    _, items = planted()
    catalog = Catalog.from_items(items, log(seqs))
    index = IndexSnapshot.empty(dim=4, model_name="none", config=IndexConfig())
    walk = ["c5i0", "c5i1", "c5i2", "c2i2", "c2i3"]  # an older walk in c5, the recent one in c2
    newest_first = tuple(HistoryEntry(a, 5.0, 1_000 + n) for n, a in reversed(list(enumerate(walk))))
    user = UserSignals(user_id="u", history=newest_first)
    res = ranked_candidates(core=core, index=index, catalog=catalog, user=user, k=5, params=RankingParams())
    assert res is not None and res.items[0].parent_asin == "c2i4", [c.parent_asin for c in res.items]
    assert res.ranker == core.version and all(c.channel for c in res.items)
    assert not set(walk) & {c.parent_asin for c in res.items}


def test_dislikes_push_similar_items_down(fitted: tuple[RankingCore, dict[str, list[str]]]) -> None:
    import numpy as np

    from services.retriever.candidates import HistoryEntry, RankingParams, UserSignals, ranked_candidates
    from services.retriever.catalog import Catalog
    from services.retriever.index import IndexConfig, IndexSnapshot, ItemVector

    core, seqs = fitted
    _, items = planted()
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(CLUSTERS + 1, 8))
    def vec(a: str) -> np.ndarray:
        v = centres[int(a[1]) if a.startswith("c") else CLUSTERS] + 0.05 * rng.normal(size=8)
        return (v / np.linalg.norm(v)).astype(np.float32)
    index = IndexSnapshot.build([ItemVector(it.parent_asin, "h", vec(it.parent_asin), vec(it.parent_asin))
                                 for it in items], dim=8, model_name="planted", config=IndexConfig())
    catalog = Catalog.from_items(items, log(seqs))
    walk = ["c5i0", "c5i1", "c2i2", "c5i2", "c2i3"]  # two tastes; the user then says they dislike c5
    hist = tuple(HistoryEntry(a, 5.0, 1_000 + n) for n, a in enumerate(walk))
    params = RankingParams()
    plain = ranked_candidates(core=core, index=index, catalog=catalog, user=UserSignals(history=hist), k=6,
                              params=params)
    disliked = ranked_candidates(core=core, index=index, catalog=catalog, params=params, k=6,
                                 user=UserSignals(history=hist, dislike_vector=centres[5].astype(np.float32)))
    assert plain is not None and disliked is not None
    def c5_share(res: object) -> float:
        top = [c.parent_asin for c in res.items]  # type: ignore[attr-defined]
        return sum(a.startswith("c5") for a in top) / len(top)
    assert c5_share(plain) >= 0.3, [c.parent_asin for c in plain.items]
    assert c5_share(disliked) < c5_share(plain), [c.parent_asin for c in disliked.items]
