"""What the dashboard's pages are built from: panels (one dependency's answer or why it is missing),
accepted ids, and the test-review form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.amazon import MAX_ID

Strategy = Literal["hybrid", "als", "llm_only", "popular"]
STRATEGIES: tuple[Strategy, ...] = ("hybrid", "als", "llm_only", "popular")
SERVICES = ("gateway", "ingest", "retriever", "explainer", "als")

# Ids the pages accept: what real Amazon ids and synthetic ones look like (letters, digits and a few
# separators), at most the ingest limit. Anything else gets a 400 page that says so.
# Error codes that mean "there is none yet" rather than "broken" (ALS answers 503 before a first model).
NOTHING_YET = frozenset({"no_live_model"})

ID_PATTERN = re.compile(rf"^[\w.:@+=-]{{1,{MAX_ID}}}$")


def check_id(value: str) -> str | None:
    """None when ``value`` is an acceptable user id or parent_asin, else the reason it is not."""
    if not value:
        return "the id is empty"
    if len(value) > MAX_ID:
        return f"the id is {len(value)} characters long; ids have at most {MAX_ID}"
    if not ID_PATTERN.match(value):
        return "ids contain only letters, digits and . _ - : @ + ="
    return None


@dataclass
class Panel:
    """One dependency's answer for one part of a page.

    ``ok``: it answered with a success. ``status``: the HTTP status when it answered at all (None when it
    could not be reached or timed out: then the panel shows "down").
    """

    ok: bool
    data: Any = None
    error: str = ""
    status: int | None = None
    code: str = ""  # the dependency's error code, when it answered with one

    @property
    def down(self) -> bool:
        return not self.ok and not self.not_found and (self.status is None or self.status >= 500)

    @property
    def not_found(self) -> bool:
        return self.status == 404 or self.code in NOTHING_YET


class TestReviewForm(BaseModel):
    """The test review the user page posts through the ingest API."""

    parent_asin: str | None = Field(None, max_length=MAX_ID, description="default: the user's top hybrid item")
    rating: float = Field(5.0, ge=1, le=5)
    text: str = Field("Posted from the recsys dashboard to watch the lists change.", max_length=2000)
