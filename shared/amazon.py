"""The Amazon Reviews 2023 raw schema (reviews and item metadata), validated at the edges.

Optional fields may be missing; unknown fields are tolerated and kept in ``extra``.
The same models validate HTTP bodies, raw-topic records, files and synthetic data.
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_ID = 128  # user_id, parent_asin, asin: validation and the database columns (shared.models)
MAX_TITLE = 1_000
MAX_TEXT = 50_000  # characters; real reviews top out far below this
MAX_LIST = 200
MIN_TS_MS = 631_152_000_000  # 1990-01-01: anything earlier is seconds, not ms, or garbage
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_INT32 = 2_147_483_647  # helpful_vote / rating_number are 32-bit columns
# Real records nest 3 levels at most (an item's ``details``); a JSON encoder recurses once per level
# (orjson stops at 254), so a deeper record could be accepted but never stored or hashed.
MAX_DEPTH = 16


def _strip_id(v: Any) -> Any:
    if isinstance(v, str):
        if "\x00" in v:
            raise ValueError("ids must not contain NUL characters")
        return v.strip()
    return v


def _drop_nul(v: Any) -> Any:
    # PostgreSQL text cannot hold NUL; it carries no meaning in review text, so it is dropped.
    return v.replace("\x00", "") if isinstance(v, str) else v


def _text_or_empty(v: Any) -> Any:
    # Real files carry ``"title": null`` now and then: same as an empty title.
    return "" if v is None else _drop_nul(v)


def nesting_depth(value: Any, *, stop_at: int = MAX_DEPTH + 1) -> int:
    """Levels of lists/objects in ``value`` (a scalar is 0), counted up to ``stop_at`` without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list | tuple):
            depth += 1
            deepest = max(deepest, depth)
            if deepest >= stop_at:
                return deepest
            stack.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


_IDS = frozenset({"user_id", "parent_asin", "asin"})  # NUL in an id is an error, not something to drop


def _without_nul(value: Any) -> Any:
    # PostgreSQL's JSON and text types cannot hold NUL (U+0000); it carries no meaning anywhere in a record.
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _clean_record(data: Any) -> Any:
    """The raw record with its nesting bounded and NUL dropped from every key and string but the ids.

    Whole record, known and unknown fields alike (the record itself is level 1). Depth is checked
    first, so the recursive NUL walk is bounded too.
    """
    if not isinstance(data, dict):
        return data
    out: dict[Any, Any] = {}
    for name, value in data.items():
        if nesting_depth(value, stop_at=MAX_DEPTH) >= MAX_DEPTH:
            raise ValueError(f"field {_without_nul(name)!r} is nested deeper than {MAX_DEPTH - 1} levels")
        key = _without_nul(name)
        out[key] = value if key in _IDS else _without_nul(value)
    return out


class ReviewIn(BaseModel):
    """One review as Amazon Reviews 2023 ships it."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)

    rating: float = Field(ge=1, le=5, allow_inf_nan=False)
    title: str = Field("", max_length=MAX_TITLE)
    text: str = Field("", max_length=MAX_TEXT)
    images: list[Any] = Field(default_factory=list, max_length=MAX_LIST)
    asin: str | None = Field(None, max_length=MAX_ID)
    parent_asin: str = Field(min_length=1, max_length=MAX_ID)
    user_id: str = Field(min_length=1, max_length=MAX_ID)
    timestamp: int = Field(ge=MIN_TS_MS, le=MAX_TS_MS, description="milliseconds since epoch")
    helpful_vote: int | None = Field(None, ge=0, le=MAX_INT32)
    verified_purchase: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _nesting(cls, data: Any) -> Any:
        return _clean_record(data)

    _norm_ids = field_validator("parent_asin", "user_id", "asin", mode="before")(_strip_id)
    _norm_text = field_validator("title", "text", mode="before")(_text_or_empty)

    @field_validator("rating", mode="before")
    @classmethod
    def _rating_number(cls, v: Any) -> Any:
        if isinstance(v, bool) or isinstance(v, str):
            raise ValueError("rating must be a number from 1 to 5")
        return v

    @field_validator("timestamp", mode="before")
    @classmethod
    def _ts_int(cls, v: Any) -> Any:
        if isinstance(v, bool) or isinstance(v, str):
            raise ValueError("timestamp must be an integer (ms since epoch)")
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError("timestamp must be an integer (ms since epoch)")
            return int(v)
        return v

    @property
    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ItemIn(BaseModel):
    """One item's metadata as Amazon Reviews 2023 ships it (most fields optional)."""

    model_config = ConfigDict(extra="allow")

    parent_asin: str = Field(min_length=1, max_length=MAX_ID)
    title: str = Field("", max_length=MAX_TEXT)
    main_category: str | None = Field(None, max_length=256)
    store: str | None = Field(None, max_length=256)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    average_rating: float | None = Field(None, ge=0, le=5, allow_inf_nan=False)
    rating_number: int | None = Field(None, ge=0, le=MAX_INT32)
    features: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    description: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    categories: list[Any] = Field(default_factory=list, max_length=MAX_LIST)
    details: dict[str, Any] = Field(default_factory=dict)
    images: list[Any] = Field(default_factory=list)
    videos: list[Any] = Field(default_factory=list)
    bought_together: Any = None

    @model_validator(mode="before")
    @classmethod
    def _nesting(cls, data: Any) -> Any:
        return _clean_record(data)

    _norm_ids = field_validator("parent_asin", mode="before")(_strip_id)
    _norm_title = field_validator("title", mode="before")(_text_or_empty)
    _norm_text = field_validator("main_category", "store", mode="before")(_drop_nul)

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, v: Any) -> Any:
        # Real metadata has prices like "None", "—" or "$12.99".
        if v is None or isinstance(v, int | float):
            return v
        if isinstance(v, str):
            s = v.strip().lstrip("$").replace(",", "")
            try:
                return float(s)
            except ValueError:
                return None
        return None

    @field_validator("features", "description", mode="before")
    @classmethod
    def _str_list(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        return v

    @field_validator("details", mode="before")
    @classmethod
    def _details(cls, v: Any) -> Any:
        if v is None:
            return {}
        if isinstance(v, str):
            try:
                parsed = json.loads(v)
                return parsed if isinstance(parsed, dict) else {}
            except ValueError:
                return {}
        return v

    @model_validator(mode="after")
    def _bounded(self) -> ItemIn:
        size = len(self.title) + sum(len(s) for s in self.features) + sum(len(s) for s in self.description)
        if size > 200_000:
            raise ValueError("item text (title + features + description) exceeds 200,000 characters")
        return self

    @property
    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def open_text(path: str | Path) -> io.TextIOBase:
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8", errors="replace")
    return open(p, encoding="utf-8", errors="replace")  # noqa: SIM115


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield ``(line_no, record, error)`` for every non-blank line of a .jsonl or .jsonl.gz file."""
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield line_no, None, f"invalid JSON: {e}"
                continue
            except RecursionError:
                yield line_no, None, "invalid JSON: nested too deeply to parse"
                continue
            if not isinstance(obj, dict):
                yield line_no, None, "not a JSON object"
                continue
            yield line_no, obj, None


def load_reviews(path: str | Path) -> list[ReviewIn]:
    """Read and validate a reviews file; invalid lines are skipped (callers that care use iter_jsonl)."""
    out = []
    for _, obj, err in iter_jsonl(path):
        if err is None and obj is not None:
            try:
                out.append(ReviewIn.model_validate(obj))
            except ValueError:
                continue
    return out


def load_items(path: str | Path) -> list[ItemIn]:
    out = []
    for _, obj, err in iter_jsonl(path):
        if err is None and obj is not None:
            try:
                out.append(ItemIn.model_validate(obj))
            except ValueError:
                continue
    return out


def item_text(item: ItemIn | Any, *, max_chars: int = 2_000, store: bool = False, category: bool = True) -> str:
    """Title + features + description + key details (+ store, + category), missing parts skipped.

    The defaults are what gets embedded. The lexical candidate source asks for ``store=True,
    category=False``: a category every item shares is no text, and an item without any scores nothing.
    """
    parts: list[str] = []
    title = getattr(item, "title", "") or ""
    if title:
        parts.append(title.strip())
    feats = [f.strip() for f in (getattr(item, "features", None) or []) if isinstance(f, str) and f.strip()]
    if feats:
        parts.append("Features: " + "; ".join(feats))
    desc = [d.strip() for d in (getattr(item, "description", None) or []) if isinstance(d, str) and d.strip()]
    if desc:
        parts.append("Description: " + " ".join(desc))
    details = getattr(item, "details", None) or {}
    if isinstance(details, dict):
        keep = [f"{k}: {v}" for k, v in list(details.items())[:8]
                if isinstance(v, str | int | float) and str(v)]
        if keep:
            parts.append("Details: " + "; ".join(keep))
    shop = getattr(item, "store", None)
    if store and isinstance(shop, str) and shop.strip():
        parts.append(f"Store: {shop.strip()}")
    cat = getattr(item, "main_category", None)
    if category and cat:
        parts.append(f"Category: {cat}")
    return ". ".join(parts)[:max_chars]
