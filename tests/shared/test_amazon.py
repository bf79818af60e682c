"""shared.amazon: the raw Amazon Reviews 2023 schemas and the item text."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.amazon import ItemIn, ReviewIn, item_text

GOOD = {"rating": 5.0, "title": "Great", "text": "Soft wig", "images": [], "asin": "B01",
        "parent_asin": "B01", "user_id": "U1", "timestamp": 1700000000000, "helpful_vote": 0, "verified_purchase": True}


@pytest.mark.parametrize("field,value", [("rating", 0), ("rating", 6), ("rating", "five"), ("user_id", ""),
                                         ("parent_asin", "  "), ("timestamp", 1700000000)])
def test_review_schema_rejects(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        ReviewIn.model_validate({**GOOD, field: value})
    assert field in str(exc.value)


def test_review_schema_keeps_unknown_fields_and_tolerates_missing_optional() -> None:
    optional = ("helpful_vote", "verified_purchase")
    r = ReviewIn.model_validate({k: v for k, v in GOOD.items() if k not in optional} | {"shop_extra": 1})
    assert r.helpful_vote is None and r.extra_fields == {"shop_extra": 1}


def test_item_text_skips_missing_parts() -> None:
    item = ItemIn.model_validate({"parent_asin": "X", "title": "Lace wig", "price": "None", "features": None})
    assert item.price is None
    assert item_text(item) == "Lace wig"
    full = ItemIn.model_validate({"parent_asin": "X", "title": "Lace wig", "features": ["soft"],
                                  "description": ["A wig."], "main_category": "All Beauty"})
    assert item_text(full) == "Lace wig. Features: soft. Description: A wig.. Category: All Beauty"


def test_item_text_store_and_category_are_optional_parts() -> None:
    item = ItemIn.model_validate({"parent_asin": "X", "title": "Lace wig", "store": "WigCo",
                                  "main_category": "All Beauty"})
    assert item_text(item) == "Lace wig. Category: All Beauty"  # the embedded text is unchanged
    assert item_text(item, store=True, category=False) == "Lace wig. Store: WigCo"
