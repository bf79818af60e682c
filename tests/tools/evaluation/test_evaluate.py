"""``recsys evaluate`` end to end on small synthetic data: files written, shape, determinism, bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from shared.config import CommonSettings
from tools.evaluation.run import main
from tools.evaluation.scoring import metric_keys

K = 10
FAST = ["popular", "hybrid", "llm_only"]


def check_metrics_schema(doc: dict[str, Any], *, k: int, strategies: list[str]) -> None:
    """The metrics.json contract of issue 7."""
    assert doc["k"] == k
    assert doc["split"] in ("leave-last-out", "global-time")
    assert isinstance(doc["n_users"], int) and doc["n_users"] > 0
    assert sorted(doc["strategies"]) == sorted(strategies)
    allowed = set(metric_keys(k)) | {"n_users"}
    for name, block in doc["strategies"].items():
        assert set(block) == {"overall", "cold", "warm"}, name
        assert block["overall"]["n_users"] == doc["n_users"]
        assert block["cold"]["n_users"] + block["warm"]["n_users"] == doc["n_users"]
        for group in block.values():
            assert set(group) <= allowed, set(group) - allowed
            for key, value in group.items():
                assert isinstance(value, int | float) and math.isfinite(value), (name, key, value)
                if key not in ("rmse", "mae", "novelty", "avg_rating", "seconds_per_user", "n_users"):
                    assert 0.0 <= value <= 1.0, (name, key, value)
        overall = block["overall"]
        for key in (f"hit_rate@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}", "catalog_coverage",
                    "novelty", "avg_rating", "seconds_per_user"):
            assert key in overall, (name, key)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory, small_synth: tuple[Path, Path],
             eval_settings: CommonSettings) -> Path:
    out = tmp_path_factory.mktemp("eval-fast")
    rc = main(*small_synth, out, k=K, strategies=FAST, settings=eval_settings, show_progress=False)
    assert rc == 0
    return out


def test_metrics_json_has_the_documented_shape(fast_run: Path) -> None:
    doc = json.loads((fast_run / "metrics.json").read_text())
    check_metrics_schema(doc, k=K, strategies=FAST)
    assert doc["failed"] == {}
    assert doc["n_cold_users"] > 0  # tools.synth: most users write one review


def test_metrics_that_do_not_apply_are_absent(fast_run: Path) -> None:
    s = json.loads((fast_run / "metrics.json").read_text())["strategies"]
    assert "rmse" in s["popular"]["overall"] and "rmse" not in s["hybrid"]["overall"]
    assert "cold_start_ratio" not in s["popular"]["overall"]  # popular does not personalize
    assert "avg_specificity" in s["hybrid"]["overall"] and "avg_specificity" not in s["popular"]["overall"]
    # cold users have no profile: AvgCosSim and grounding are undefined for that group
    assert "avg_cos_sim" not in s["hybrid"]["cold"] and "grounding_ratio" not in s["hybrid"]["cold"]
    assert s["hybrid"]["cold"]["n_users"] > 0 and "ad_dup_ratio" in s["hybrid"]["cold"]


def test_report_charts_and_case_studies_are_written(fast_run: Path) -> None:
    report = (fast_run / "report.md").read_text()
    assert "## The study's metrics (as in its Table 2)" in report
    for heading in ("## Accuracy", "## Beyond accuracy", "## Explanations", "## Cost", "## Reading"):
        assert heading in report
    for name in FAST:
        assert f"| {name}" in report or f" {name} |" in report
    assert report.count("### User `") == 3
    for png in ("metrics_per_strategy.png", "cost_vs_quality.png"):
        data = (fast_run / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
        assert f"]({png})" in report
    assert (fast_run / "case_studies.md").read_text().count("### User `") == 3


def _without_timings(doc: dict[str, Any]) -> dict[str, Any]:
    for block in doc["strategies"].values():
        for group in block.values():
            group.pop("seconds_per_user", None)
    for key in ("seconds_total", "costs"):
        doc.pop(key)
    for params in doc.get("params", {}).values():  # fit times (the ranking core reports its own)
        if isinstance(params, dict):
            params.pop("fit_seconds", None)
    return doc


def test_deterministic_for_a_seed(tmp_path: Path, small_synth: tuple[Path, Path],
                                  eval_settings: CommonSettings) -> None:
    docs = []
    for name in ("a", "b"):
        rc = main(*small_synth, tmp_path / name, k=K, strategies=FAST, users=25, seed=5,
                  settings=eval_settings, show_progress=False)
        assert rc == 0
        docs.append(_without_timings(json.loads((tmp_path / name / "metrics.json").read_text())))
    assert docs[0] == docs[1]
    assert docs[0]["n_users"] == 25


def test_user_sample_and_global_time_split(tmp_path: Path, small_synth: tuple[Path, Path],
                                           eval_settings: CommonSettings) -> None:
    rc = main(*small_synth, tmp_path, k=5, strategies=["popular"], users=20, split="global-time",
              settings=eval_settings, show_progress=False)
    assert rc == 0
    doc = json.loads((tmp_path / "metrics.json").read_text())
    check_metrics_schema(doc, k=5, strategies=["popular"])
    assert doc["n_users"] == 20 and doc["split"] == "global-time"


@pytest.mark.parametrize("kwargs", [
    {"strategies": ["nope"]}, {"k": 0}, {"split": "random"},
])
def test_bad_arguments_exit_2(tmp_path: Path, small_synth: tuple[Path, Path], eval_settings: CommonSettings,
                              kwargs: dict[str, Any]) -> None:
    assert main(*small_synth, tmp_path, settings=eval_settings, show_progress=False, **kwargs) == 2
    assert not (tmp_path / "metrics.json").exists()


def test_missing_or_empty_files_exit_2(tmp_path: Path, small_synth: tuple[Path, Path],
                                       eval_settings: CommonSettings) -> None:
    assert main(tmp_path / "nope.jsonl", small_synth[1], tmp_path / "o1", settings=eval_settings) == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(empty, small_synth[1], tmp_path / "o2", settings=eval_settings, show_progress=False) == 2


def test_bad_lines_and_missing_optional_fields_are_tolerated(tmp_path: Path,
                                                             eval_settings: CommonSettings) -> None:
    reviews = tmp_path / "reviews.jsonl"
    # no title, text, asin, helpful_vote or verified_purchase
    rows = [{"rating": 5, "parent_asin": f"I{i % 4}", "user_id": f"u{i % 3}",
             "timestamp": 1_600_000_000_000 + i} for i in range(12)]
    reviews.write_text("\n".join([json.dumps(r) for r in rows] + ["not json", '{"rating": 9}', "[1]"]) + "\n")
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"parent_asin": "I0", "title": "A thing"}) + "\n")  # other items: no metadata
    assert main(reviews, meta, tmp_path / "out", k=3, strategies=["popular"], settings=eval_settings,
                show_progress=False) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "3 skipped" in report
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["n_items"] == 4


def test_a_failing_strategy_is_reported_and_the_others_kept(tmp_path: Path, small_synth: tuple[Path, Path],
                                                            eval_settings: CommonSettings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.evaluation.profiles as profiles

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("profiler exploded")

    monkeypatch.setattr(profiles, "profile_offline_users", broken)
    rc = main(*small_synth, tmp_path, k=K, strategies=["popular", "hybrid_study"], settings=eval_settings,
              show_progress=False)
    assert rc == 1
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert list(doc["strategies"]) == ["popular"]
    assert "hybrid_study" in doc["failed"] and "profiles" in doc["failed"]["hybrid_study"]
    assert any("profiler exploded" in n for n in doc["notes"])
    assert "hybrid_study did not run" in (tmp_path / "report.md").read_text()
