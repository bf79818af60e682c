"""shared.records: one field accessor for dicts, objects and pandas rows."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from shared.records import get_field


def test_get_field_reads_mappings_objects_and_pandas_rows() -> None:
    assert get_field({"title": "Wig"}, "title") == "Wig"
    assert get_field(SimpleNamespace(title="Wig"), "title") == "Wig"
    row = next(pd.DataFrame([{"title": "Wig", "rating": float("nan")}]).itertuples(index=False))
    assert get_field(row, "title") == "Wig"


def test_missing_none_and_nan_give_the_default() -> None:
    assert get_field({}, "title", "x") == "x"
    assert get_field({"title": None}, "title", "x") == "x"
    assert get_field(SimpleNamespace(), "title") is None
    assert get_field({"rating": float("nan")}, "rating", 0.0) == 0.0
    assert get_field({"rating": 0}, "rating", 5) == 0  # falsy values are values
