"""Which model the core serves, and how much diversity it buys: the rules on planted validation figures.

Pure logic (no fitted sources): per-query gains and ranked lists made up so the answer is known.
"""
from __future__ import annotations

import numpy as np

from services.retriever.ranking.diversity import choose_lambda
from services.retriever.ranking.learn import choose_model


def _gains(rng: np.random.Generator, n: int, hit: float) -> np.ndarray:
    """Per-query NDCG@10 of one relevant item: 0 (a miss) or 1 / log2(position + 2)."""
    pos = rng.integers(0, 10, size=n)
    return np.where(rng.random(n) < hit, 1.0 / np.log2(pos + 2.0), 0.0)


def test_models_the_validation_cannot_tell_apart_serve_the_ensemble() -> None:
    rng = np.random.default_rng(3)
    ens = _gains(rng, 400, 0.4)
    # the blend a little ahead on average, but by less than the noise of a paired difference
    blend = ens.copy()
    flip = rng.choice(400, size=40, replace=False)
    blend[flip] = _gains(rng, 40, 0.5)
    ranker = ens.copy()
    ranker[flip[:20]] = _gains(rng, 20, 0.3)
    chosen, margins = choose_model({"blend": blend, "lambdarank": ranker, "ensemble": ens})
    assert 0 < margins["blend-ensemble"] < margins["blend-ensemble:se"]  # ahead, within the noise
    assert chosen == "ensemble"
    # with no margin at all the blend's lead would be taken at face value
    assert choose_model({"blend": blend, "lambdarank": ranker, "ensemble": ens}, margin_se=0.0)[0] == "blend"


def test_a_model_that_beats_the_ensemble_beyond_the_noise_replaces_it() -> None:
    rng = np.random.default_rng(4)
    ens = _gains(rng, 400, 0.3)
    ranker = ens.copy()
    misses = np.flatnonzero(ens == 0)[:80]
    ranker[misses] = 1.0  # 80 more targets at the top: far beyond one standard error
    blend = ens.copy()
    blend[misses[:10]] = 1.0  # ahead too, by less than the ranker
    chosen, margins = choose_model({"blend": blend, "lambdarank": ranker, "ensemble": ens})
    assert chosen == "lambdarank"
    assert margins["lambdarank-ensemble"] > margins["lambdarank-ensemble:se"] > 0
    assert margins["lambdarank-ensemble"] > margins["blend-ensemble"] > 0
    # a stricter margin keeps the ensemble
    assert choose_model({"blend": blend, "lambdarank": ranker, "ensemble": ens}, margin_se=100.0)[0] == "ensemble"


def test_the_lambdas_within_the_diversity_budget_are_reported() -> None:
    class Sim:
        kind = "planted"

        def matrix(self, asins: list[str]) -> np.ndarray:
            # items of one letter are alike: MMR spreads a list over letters
            return np.asarray([[1.0 if a[0] == b[0] else 0.0 for b in asins] for a in asins])

    sim = Sim()
    asins = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)] + [f"c{i}" for i in range(10)]
    scores = np.linspace(1.0, 0.0, len(asins))
    # every target is the model's second item: MMR with a low lambda pushes it down (an "a" after "a0")
    ranked = [(asins, scores, "a1", sim)] * 20
    lam, figures = choose_lambda(ranked, k=10, max_cost=0.01)  # type: ignore[arg-type]
    assert figures["allowed"][0] == 1.0
    assert lam == min(figures["allowed"])
    nd = {float(x): v for x, v in figures["validation_ndcg"].items()}
    assert all(nd[a] >= 0.99 * nd[1.0] for a in figures["allowed"])
    assert any(nd[x] < 0.99 * nd[1.0] for x in nd if x not in figures["allowed"])
