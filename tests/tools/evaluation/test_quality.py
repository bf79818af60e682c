"""On synthetic data with planted tastes, the personalized strategies beat popular on Recall@10.

One run (popular, ALS explicit and implicit with one grid point each, hybrid, blend) on 150 users;
Spark dominates the time. The LLM-heavy llm_only is covered by test_evaluate on fewer users.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import CommonSettings
from tools.evaluation.run import main

QUICK_ALS = {"als_grid": {"rank": [8], "regParam": [0.1]}, "als_implicit_grid": {"rank": [8], "alpha": [5.0]},
             "als_base": {"maxIter": 5}}


@pytest.mark.slow
def test_hybrid_and_als_beat_popular_on_planted_tastes(tmp_path: Path, taste_synth: tuple[Path, Path],
                                                       eval_settings: CommonSettings) -> None:
    strategies = ["popular", "als", "als_implicit", "hybrid", "blend"]
    # ALS trains on every user; the strategies are scored on a sample of 150 (profiles cost most)
    rc = main(*taste_synth, tmp_path, k=10, strategies=strategies, users=150, settings=eval_settings,
              show_progress=False, options=QUICK_ALS)
    assert rc == 0
    doc = json.loads((tmp_path / "metrics.json").read_text())
    recall = {s: doc["strategies"][s]["overall"]["recall@10"] for s in strategies}
    warm = {s: doc["strategies"][s]["warm"]["recall@10"] for s in strategies}
    assert recall["hybrid"] > recall["popular"], recall
    assert recall["als_implicit"] > recall["popular"], recall
    assert recall["blend"] > recall["popular"], recall
    # where there is a history to learn from, the margin is clear
    assert warm["hybrid"] > 1.5 * warm["popular"] and warm["als_implicit"] > 1.5 * warm["popular"], warm
    report = (tmp_path / "report.md").read_text()
    best = max(recall, key=lambda s: recall[s])
    assert f"Best Recall@10: {best}" in report
