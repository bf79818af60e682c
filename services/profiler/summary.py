"""The three-sentence summary: an LLM's text split and cleaned, completed from a fallback.

Preambles, list markers, sentences with braces/markup/"JSON", links or instruction-like phrases
(``shared.text``) and fragments under four words are dropped; the first three sentences are kept;
missing ones are completed position-wise from the extractive summary
(``summary_source`` = ``llm`` | ``mixed`` | ``extractive``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared.text import has_link, instruction_like

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_LIST_MARKER = re.compile(
    r"^\s*(?:(?:sentence\s*)?\d+\s*[.):\-]|[-*•]|\(?[ivx]+\)|summary\s*:)\s*", re.IGNORECASE
)
_JUNK = re.compile(r"[{}\[\]<>|`]|json|\bsentences?\b|as an ai|language model", re.IGNORECASE)


def split_sentences(text: str) -> list[str]:
    text = re.sub(r"\s*\n+\s*", "\n", (text or "").strip())
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def clean_sentences(text: str | None, *, min_words: int = 4, max_words: int = 45) -> list[str]:
    """Sentences of an LLM summary worth keeping: list markers and preambles removed, deduped."""
    kept: list[str] = []
    for sentence in split_sentences(text or ""):
        s = _LIST_MARKER.sub("", sentence).strip().strip('"').strip()
        if not s or s.endswith(":") or _JUNK.search(s) or has_link(s) or instruction_like(s):
            continue
        words = s.split()
        if len(words) < min_words or sum(c.isalpha() or c.isspace() for c in s) < 0.8 * len(s):
            continue
        if len(words) > max_words:
            s = " ".join(words[:max_words]).rstrip(",;:") + "."
        if s[-1] not in ".!?":
            s += "."
        s = s[0].upper() + s[1:]
        if s.lower() not in {k.lower() for k in kept}:
            kept.append(s)
    return kept


def three_sentences(llm_sentences: Sequence[str], fallback: Sequence[str]) -> tuple[str, str]:
    """Exactly three sentences: the LLM's first three, completed position-wise from ``fallback``."""
    chosen = list(llm_sentences[:3])
    source = "llm" if len(chosen) == 3 else ("mixed" if chosen else "extractive")
    for i in range(len(chosen), 3):
        chosen.append(fallback[i])
    return " ".join(chosen), source
