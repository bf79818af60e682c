"""LLM backend for reasons: one short prompt per item, generated in small batches under a time budget.

Every output is validated (length, no prompt echo, no markup or link, grounded in the item and the
profile); an item whose output fails gets a template reason with ``source="template"``. Titles and
features are sanitised (``shared.text.sanitize_untrusted``: HTML, links, JSON-ish blobs and
instruction-like sentences removed) before they reach the prompt or the validation. The budget is
checked between batches, so a slow model never holds a request longer than about one batch past it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.logging import get_logger
from shared.records import get_field
from shared.text import (
    GENERIC,
    clip,
    content_stems,
    has_link,
    normalize,
    one_line,
    sanitize_untrusted,
    vocab,
    words,
)

log = get_logger(__name__)

SYSTEM = "You write one short, catchy product ad line."
PROMPT_MARKERS = (
    "customer likes",
    "product:",
    "features:",
    "write one",
    "facts given",
    "recommendation line",
    "ignore previous",
    "instruction",
    "as an ai",
    "assistant",
)
_PREFIX = re.compile(
    r"^\s*(?:sure[!,.]?|here(?:'s| is)[^:]*:|reason\s*:|slogan\s*:|answer\s*:|line\s*:)\s*", re.I
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_OUT_OF_FIVE = re.compile(r"/\s*5\b|\bout of 5\b")


def item_title(item: Any) -> str:
    """The item's title as a prompt may show it (sanitised)."""
    title = get_field(item, "title") or ""
    return sanitize_untrusted(title) if isinstance(title, str) else ""


def item_features(item: Any) -> list[str]:
    feats = get_field(item, "features") or []
    return [f for f in (sanitize_untrusted(x) for x in feats if isinstance(x, str)) if f]


def reason_prompt(*, terms: Sequence[str], item: Any) -> str:
    """The per-item prompt: untrusted strings are sanitised and flattened so they cannot add
    instructions, markup or lines."""
    likes = ", ".join(one_line(sanitize_untrusted(t), 40) for t in terms[:4] if sanitize_untrusted(t))
    likes = likes or "popular, well-rated products (new customer)"
    feats = "; ".join(one_line(f, 80) for f in item_features(item)[:3])
    lines = [f"Product: {one_line(item_title(item) or get_field(item, 'parent_asin') or '', 120)}"]
    if feats:
        lines.append(f"Features: {feats}")
    if get_field(item, "average_rating") and get_field(item, "rating_number"):
        rating, count = float(get_field(item, "average_rating")), int(get_field(item, "rating_number"))
        lines.append(f"Rating: {rating:.1f}/5 from {count} reviews")
    lines.append(f"Customer likes: {likes}")
    lines.append("Write one catchy sentence for this customer.")
    return "\n".join(lines)


def clean_output(raw: str) -> str:
    """First non-empty line, without chatty prefixes or wrapping quotes."""
    line = next((ln.strip() for ln in raw.splitlines() if ln.strip()), "")
    line = _PREFIX.sub("", line).strip().strip("\"“”'`*").strip()
    return line


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str = ""


def validate_reason(
    text: str, *, item: Any, terms: Sequence[str], max_chars: int, max_ungrounded: int
) -> Verdict:
    """Accept a generated reason only if it is short, not an echo of the prompt, and grounded."""
    if not text:
        return Verdict(False, "empty")
    if len(text) > max_chars or len(text) < 15 or len(words(text)) < 4:
        return Verdict(False, "length")
    low = normalize(text)
    if any(m in low for m in PROMPT_MARKERS):
        return Verdict(False, "prompt_echo")
    if any(c in text for c in "<>{}[]`|\\") or has_link(text):
        return Verdict(False, "markup")
    title = item_title(item)
    if len(title) > 20 and normalize(title) in low and len(low) < len(normalize(title)) + 15:
        return Verdict(False, "title_echo")
    feats = item_features(item)
    item_text = " ".join([title, *feats, sanitize_untrusted(get_field(item, "main_category") or "")])
    known_numbers = set(_NUMBER.findall(item_text))
    for key in ("average_rating", "rating_number"):
        v = get_field(item, key)
        if v:
            known_numbers.update({str(v), f"{float(v):.1f}", f"{int(v):,}", str(int(v))})
    if any(n not in known_numbers for n in _NUMBER.findall(_OUT_OF_FIVE.sub("", text))):
        return Verdict(False, "invented_number")
    grounded = vocab([item_text, *terms]) | {s for w in GENERIC for s in content_stems(w)} | set(GENERIC)
    stems = content_stems(text)
    ungrounded = [s for s in stems if s not in grounded]
    if len(ungrounded) > max_ungrounded:
        return Verdict(False, "ungrounded:" + ",".join(ungrounded[:5]))
    if not any(s in vocab([item_text]) for s in stems):
        return Verdict(False, "not_about_item")
    return Verdict(True)


class LLMReasoner:
    """Generates reasons with a shared LLM (one generate call at a time per process)."""

    def __init__(
        self, llm: Any, *, batch: int, max_new_tokens: int, max_chars: int, max_ungrounded: int
    ) -> None:
        self.llm = llm
        self.name: str = getattr(llm, "name", "llm")
        self.batch = batch
        self.max_new_tokens = max_new_tokens
        self.max_chars = max_chars
        self.max_ungrounded = max_ungrounded
        self._lock = threading.Lock()

    def generate(self, *, terms: Sequence[str], items: Sequence[Any], deadline: float) -> list[str | None]:
        """A validated reason or None per item; items not reached before ``deadline`` are None."""
        out: list[str | None] = [None] * len(items)
        for start in range(0, len(items), self.batch):
            if time.monotonic() >= deadline:
                break
            chunk = items[start : start + self.batch]
            prompts = [reason_prompt(terms=terms, item=it) for it in chunk]
            with self._lock:
                if time.monotonic() >= deadline:
                    break
                raw = self.llm.generate(
                    prompts, max_new_tokens=self.max_new_tokens, temperature=0.0, system=SYSTEM
                )
            for i, (item, text) in enumerate(zip(chunk, raw, strict=False)):
                reason = clip(clean_output(text or ""), self.max_chars + 40)
                if reason and reason[-1] not in ".!?":
                    reason += "."
                verdict = validate_reason(
                    reason,
                    item=item,
                    terms=terms,
                    max_chars=self.max_chars,
                    max_ungrounded=self.max_ungrounded,
                )
                if verdict.ok:
                    out[start + i] = reason
                else:
                    log.info(
                        "llm reason rejected",
                        extra={
                            "parent_asin": get_field(item, "parent_asin"),
                            "why": verdict.why,
                            "output": text[:200],
                        },
                    )
        return out

    @property
    def can_score(self) -> bool:
        """The backend scores labels in one forward pass (``shared.llm.LabelScorer``)."""
        return callable(getattr(self.llm, "score_labels", None))

    def score(
        self,
        prompt: str,
        labels: Sequence[str],
        *,
        system: str,
        answer_prefix: str,
        deadline: float | None = None,
    ) -> list[float] | None:
        """Label scores of one prompt; None when ``deadline`` passed while the request waited."""
        with self._lock:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            return list(self.llm.score_labels(prompt, labels, system=system, answer_prefix=answer_prefix))

    def complete(
        self, prompt: str, *, max_new_tokens: int, system: str, deadline: float | None = None
    ) -> str:
        """One generation; empty when ``deadline`` passed while the request waited for the model."""
        with self._lock:
            if deadline is not None and time.monotonic() >= deadline:
                return ""
            out = self.llm.generate([prompt], max_new_tokens=max_new_tokens, temperature=0.0, system=system)
            return out[0]
