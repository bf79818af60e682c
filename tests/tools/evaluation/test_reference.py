"""The reference strategies (issue 13) end to end through ``recsys evaluate`` on planted-taste synth data."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.config import CommonSettings
from tools.evaluation.run import main
from tools.evaluation.split import Interaction, leave_last_out
from tools.evaluation.strategies import ALL_STRATEGIES

REFERENCE = ["popular_count", "itemknn", "itemknn_seq", "tfidf", "sources_blend"]
K = 10


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, taste_synth: tuple[Path, Path],
                  eval_settings: CommonSettings) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval-reference")
    rc = main(*taste_synth, out, k=K, strategies=REFERENCE, settings=eval_settings, show_progress=False,
              options={"explain": "template"})
    assert rc == 0
    doc: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    doc["_out"] = str(out)
    return doc


def test_reference_strategies_are_registered() -> None:
    assert set(REFERENCE) <= set(ALL_STRATEGIES)


def test_every_reference_strategy_runs_and_is_reported(reference_run: dict[str, Any]) -> None:
    assert reference_run["failed"] == {}
    assert sorted(reference_run["strategies"]) == sorted(REFERENCE)
    for name in REFERENCE:
        overall = reference_run["strategies"][name]["overall"]
        assert overall["n_users"] == reference_run["n_users"]
        assert 0.0 <= overall[f"ndcg@{K}"] <= overall[f"hit_rate@{K}"] <= 1.0
    report = (Path(reference_run["_out"]) / "report.md").read_text()
    assert "sources_blend" in report


def test_blend_is_never_worse_on_validation_than_its_best_single_source(reference_run: dict[str, Any]) -> None:
    tuning = reference_run["params"]["sources_blend"]["tuning"]
    assert tuning["validation_users"] > 0
    singles = tuning["single_source_validation_ndcg"]
    assert set(singles) == {"coreview", "transitions", "lexical", "popular"}
    assert tuning["validation_ndcg"] >= max(singles.values())
    weights = reference_run["params"]["sources_blend"]["blend"]["weights"]
    assert any(w > 0 for w in weights.values())


def test_personal_sources_beat_popular_count_where_there_is_a_history(reference_run: dict[str, Any]) -> None:
    warm = {s: reference_run["strategies"][s]["warm"][f"hit_rate@{K}"] for s in REFERENCE}
    assert warm["sources_blend"] > warm["popular_count"], warm
    assert warm["tfidf"] > warm["popular_count"], warm  # planted tastes live in the item text


def test_lists_are_full_and_exclude_the_training_items(taste_synth: tuple[Path, Path],
                                                       eval_settings: CommonSettings) -> None:
    """The strategies' own ``recommend`` on the split: k distinct unseen items for every user."""
    from shared.amazon import load_items, load_reviews
    from tools.evaluation.context import EvalContext
    from tools.evaluation.data import OfflineCatalog
    from tools.evaluation.strategies import make_strategy

    reviews, meta = taste_synth
    split = leave_last_out(Interaction.from_review(r) for r in load_reviews(reviews))
    catalog = OfflineCatalog.build(load_items(meta), split.train)
    ctx = EvalContext(split=split, catalog=catalog, k=K, seed=1, settings=eval_settings, show_progress=False)
    users = split.test_users[:120]
    for name in REFERENCE:
        strategy = make_strategy(name, ctx)
        strategy.fit(ctx)
        for rec in strategy.recommend(ctx, users):
            assert len(rec.items) == K and len(set(rec.items)) == K, (name, rec.user_id)
            assert not set(rec.items) & ctx.seen(rec.user_id), (name, rec.user_id)
            if split.is_cold(rec.user_id):
                assert rec.cold
