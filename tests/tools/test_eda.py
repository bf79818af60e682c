"""EDA on synthetic data writes the report and plots; missing optional fields do not crash it."""

from __future__ import annotations

import json
from pathlib import Path

from tools.eda import main, run
from tools.synth import write


def test_eda_on_synth_writes_report_and_plots(tmp_path: Path) -> None:
    counts = write(tmp_path / "data", users=200, items=120, seed=5)
    out = tmp_path / "eda"
    assert (
        main(reviews=tmp_path / "data" / "reviews.jsonl", meta=tmp_path / "data" / "meta.jsonl", out=out) == 0
    )
    report = (out / "eda.md").read_text()
    assert f"{counts['reviews']:,} reviews from {counts['users']:,} unique users" in report
    for section in (
        "Missing values",
        "Verified purchases",
        "Helpful votes",
        "Category and price split",
        "Top 20 words in product titles",
    ):
        assert section in report
    assert "| price |" in report and "| features |" in report
    for png in (
        "ratings.png",
        "review_length.png",
        "reviews_per_user.png",
        "reviews_per_item.png",
        "title_words.png",
        "prices.png",
    ):
        assert (out / png).stat().st_size > 5_000, png
        assert f"]({png})" in report
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_eda_tolerates_missing_optional_fields(tmp_path: Path) -> None:
    reviews = tmp_path / "r.jsonl"
    meta = tmp_path / "m.jsonl"
    reviews.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "rating": 5.0,
                    "text": "great",
                    "parent_asin": "B1",
                    "user_id": "U1",
                    "timestamp": 1_700_000_000_000,
                },
                {"rating": 2.0, "parent_asin": "B1", "user_id": "U2", "timestamp": 1_700_000_000_000},
                {
                    "rating": 4.0,
                    "text": "",
                    "parent_asin": "B2",
                    "user_id": "U1",
                    "timestamp": 1_700_000_000_001,
                },
            ]
        )
        + "\nnot json\n"
    )
    meta.write_text(
        json.dumps({"parent_asin": "B1", "title": "Red lipstick", "price": "None"})
        + "\n"
        + json.dumps({"parent_asin": "B2", "main_category": None})
        + "\n"
    )
    stats = run(reviews=reviews, meta=meta, out=tmp_path / "out")
    assert stats["n_reviews"] == 3 and stats["n_users"] == 2
    assert stats["helpful"] is None and stats["verified"] == {}
    report = (tmp_path / "out" / "eda.md").read_text()
    assert "No `helpful_vote` field" in report
    assert "1 lines were not valid JSON" in report
    assert "| (missing) | 2 | 3.75 | 0 | n/a |" in report  # no category; ratings derived from reviews
    assert not (tmp_path / "out" / "prices.png").exists()
