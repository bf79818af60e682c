"""Synthetic data: exact 2023 schema, deterministic, realistic skew, planted tastes recoverable."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from shared.amazon import ItemIn, ReviewIn, load_items, load_reviews
from tools.synth import generate, main

REVIEW_FIELDS = {
    "rating",
    "title",
    "text",
    "images",
    "asin",
    "parent_asin",
    "user_id",
    "timestamp",
    "helpful_vote",
    "verified_purchase",
}
META_FIELDS = {
    "main_category",
    "title",
    "average_rating",
    "rating_number",
    "features",
    "description",
    "price",
    "images",
    "videos",
    "store",
    "categories",
    "details",
    "parent_asin",
    "bought_together",
}


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[dict], dict]:
    return generate(users=400, items=300, seed=11)


def test_exact_schema_and_validates(data: tuple[list[dict], list[dict], dict]) -> None:
    reviews, meta, _ = data
    assert all(set(r) == REVIEW_FIELDS for r in reviews)
    assert all(set(m) == META_FIELDS for m in meta)
    for r in reviews:
        ReviewIn.model_validate(r)
    for m in meta:
        ItemIn.model_validate(m)
    assert all(len(r["user_id"]) == 28 and r["user_id"].isupper() for r in reviews)
    assert all(isinstance(r["timestamp"], int) and r["timestamp"] > 10**12 for r in reviews)
    asins = {m["parent_asin"] for m in meta}
    assert len(asins) == len(meta)
    assert {r["parent_asin"] for r in reviews} <= asins
    assert len({(r["user_id"], r["parent_asin"]) for r in reviews}) == len(reviews)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    assert main(users=50, items=40, seed=3, out=tmp_path / "a") == 0
    assert main(users=50, items=40, seed=3, out=tmp_path / "b") == 0
    assert main(users=50, items=40, seed=4, out=tmp_path / "c") == 0
    for name in ("reviews.jsonl", "meta.jsonl", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "reviews.jsonl").read_bytes() != (tmp_path / "c" / "reviews.jsonl").read_bytes()
    assert len(load_reviews(tmp_path / "a" / "reviews.jsonl")) > 50
    assert len(load_items(tmp_path / "a" / "meta.jsonl")) == 40


def test_realistic_skew(data: tuple[list[dict], list[dict], dict]) -> None:
    reviews, meta, _ = data
    per_user = Counter(r["user_id"] for r in reviews)
    assert sum(1 for n in per_user.values() if n == 1) / len(per_user) > 0.5  # most users: one review
    assert max(per_user.values()) >= 10
    per_item = sorted(Counter(r["parent_asin"] for r in reviews).values(), reverse=True)
    top_decile = sum(per_item[: max(1, len(per_item) // 10)])
    assert top_decile / sum(per_item) > 0.25  # power-law popularity
    ratings = Counter(r["rating"] for r in reviews)
    assert ratings[5.0] == max(ratings.values()) and ratings[5.0] / len(reviews) > 0.4
    missing_price = sum(1 for m in meta if m["price"] is None) / len(meta)
    missing_features = sum(1 for m in meta if not m["features"]) / len(meta)
    assert 0.7 < missing_price < 0.95 and 0.7 < missing_features < 0.95  # the study's ~84 %


def test_planted_tastes_are_in_the_data(data: tuple[list[dict], list[dict], dict], tmp_path: Path) -> None:
    reviews, _, truth = data
    family = truth["items"]
    by_user: dict[str, list[dict]] = {}
    for r in reviews:
        by_user.setdefault(r["user_id"], []).append(r)
    heavy = [u for u, rs in by_user.items() if len(rs) >= 5]
    assert heavy
    in_fav, fav_ratings, other_ratings = 0, [], []
    for u in heavy:
        favs = set(truth["users"][u]["families"])
        for r in by_user[u]:
            if family[r["parent_asin"]] in favs:
                in_fav += 1
                fav_ratings.append(r["rating"])
            else:
                other_ratings.append(r["rating"])
    total = sum(len(by_user[u]) for u in heavy)
    assert in_fav / total > 0.75
    assert sum(fav_ratings) / len(fav_ratings) > sum(other_ratings) / max(1, len(other_ratings)) + 0.8
    # Likes show up in the text of high ratings, dislikes under negation.
    texts = " ".join(r["text"].lower() for u in heavy for r in by_user[u])
    likes = {w for u in heavy for w in truth["users"][u]["likes"]}
    assert sum(1 for w in likes if w in texts) / len(likes) > 0.8
    assert "not a fan of the" in texts or "i do not like the" in texts
    main(users=30, items=20, seed=1, out=tmp_path)
    written = json.loads((tmp_path / "truth.json").read_text())
    assert set(written) == {"seed", "families", "items", "users"}


def test_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError):
        generate(users=10, items=3, seed=1)
