"""A user's review history, joined with item titles, cut to a budget spent on the informative reviews.

Selection: of the newest ``max_reviews`` reviews, each gets an informativeness score
(0.4 · text length (saturating at ``review_chars``) + 0.35 · rating extremeness (|rating − 3| / 2)
+ 0.25 · recency rank); reviews are taken greedily by score until the character budget is spent,
then rendered newest first. Review text is data: it is sanitised (``shared.text.sanitize_untrusted``:
HTML, links, JSON-ish blobs and instruction-like sentences removed), cleaned of anything that could close
the prompt's fence and is never placed outside it. Grounding evidence is built from the same sanitised
text, so a word planted by an injected instruction can never ground a profile term.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.records import get_field
from shared.text import is_content, sanitize_untrusted, tokens

FENCE_OPEN = "<reviews>"
FENCE_CLOSE = "</reviews>"
_FENCE_LIKE = re.compile(r"</?\s*reviews?\s*>|```|<\|[^|>]*\|>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ReviewEntry:
    parent_asin: str
    item_title: str
    rating: float
    timestamp: int
    title: str
    text: str


@dataclass
class History:
    """What a profile is built from: the selected entries plus the evidence used for grounding."""

    user_id: str
    entries: list[ReviewEntry]  # selected, newest first
    n_reviews: int  # all reviews of the user considered
    last_review_ts: int | None
    evidence: str = ""  # all review titles/texts and item titles (grounding), not only the selected
    item_evidence: str = ""  # the reviewed items' own titles (grounds products and interests)
    all_entries: list[ReviewEntry] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """False for cold-start users: no review carries any content words."""
        return any(is_content(t) for e in self.all_entries for t in tokens(f"{e.title} {e.text}"))

    def render(self) -> str:
        """The fenced block the prompts embed (one line per review, newest first)."""
        lines = [FENCE_OPEN]
        for e in self.entries:
            date = datetime.fromtimestamp(e.timestamp / 1000, tz=UTC).strftime("%Y-%m-%d")
            item = e.item_title or e.parent_asin
            body = " — ".join(p for p in (e.title, e.text) if p)
            lines.append(f"- {item} ({e.rating:g}/5 stars, {date}): {body}")
        lines.append(FENCE_CLOSE)
        return "\n".join(lines)


def clean(text: str, limit: int) -> str:
    """Sanitise untrusted text, collapse whitespace, drop fence-like markers, cut at ``limit`` characters
    on a word boundary."""
    text = _SPACE.sub(" ", _FENCE_LIKE.sub(" ", sanitize_untrusted(str(text or "")))).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + "…"


def build_history(
    user_id: str,
    reviews: Sequence[Any],
    item_titles: Mapping[str, str],
    *,
    budget_chars: int = 3000,
    max_reviews: int = 200,
    review_chars: int = 400,
) -> History:
    """Select and order a user's reviews (dicts or ORM rows with the Amazon review fields)."""
    entries = [
        ReviewEntry(
            parent_asin=str(get_field(r, "parent_asin", "")),
            item_title=clean(item_titles.get(str(get_field(r, "parent_asin", "")), "") or "", 120),
            rating=float(get_field(r, "rating", 0) or 0),
            timestamp=int(get_field(r, "timestamp", 0) or 0),
            title=clean(get_field(r, "title", "") or "", 120),
            text=clean(get_field(r, "text", "") or "", review_chars),
        )
        for r in reviews
    ]
    entries.sort(key=lambda e: e.timestamp, reverse=True)
    entries = entries[:max_reviews]
    n = len(entries)

    def score(rank: int, e: ReviewEntry) -> float:
        length = min(len(e.text), review_chars) / review_chars
        extreme = abs(e.rating - 3.0) / 2.0
        recency = 1.0 - rank / max(n, 1)
        return 0.4 * length + 0.35 * extreme + 0.25 * recency

    chosen: set[int] = set()
    spent = 0
    for rank, e in sorted(enumerate(entries), key=lambda p: -score(*p)):
        cost = len(e.text) + len(e.title) + len(e.item_title) + 40
        if spent + cost > budget_chars and chosen:
            continue
        chosen.add(rank)
        spent += cost
    selected = [e for i, e in enumerate(entries) if i in chosen]
    # Grounding evidence: every review's full text, not only the selected, truncated ones.
    # Sanitised like the prompt: an instruction-like sentence grounds nothing.
    evidence = " \n".join(
        sanitize_untrusted(
            f"{item_titles.get(str(get_field(r, 'parent_asin', '')), '') or ''}. {get_field(r, 'title', '') or ''}. "
            f"{get_field(r, 'text', '') or ''}"
        )
        for r in reviews
    )
    item_evidence = " \n".join(
        sanitize_untrusted(item_titles.get(str(get_field(r, "parent_asin", "")), "") or "") for r in reviews
    )
    return History(
        user_id=user_id,
        entries=selected,
        n_reviews=n,
        last_review_ts=entries[0].timestamp if entries else None,
        evidence=evidence,
        item_evidence=item_evidence,
        all_entries=entries,
    )
