"""Small text helpers shared by the template backend, the LLM validator and the re-rank parser."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
STOPWORDS = frozenset(
    """
a an and are as at be been but by for from has have he her his i if in into is it its itself me my no nor
not of on or our she so than that the their them then there these they this those to too very was we were what
when where which while who whom why will with would you your yours also just more most much many some such
only own same other can could should may might must do does did doing am being having about above after again
against all any before below between both down during each few further here how off once out over under
until up user users customer customers buy buys bought purchase purchases purchased product products
item items likely future values value prefers prefer preference preferences interested interest interests
like likes liked
""".split()
)
# Words an ad line may use without the item having them: they claim nothing about the product.
GENERIC = frozenset(
    """
love loves loved great good best perfect ideal favorite favourite pick picks choice choose chosen recommend
recommended enjoy enjoyed enjoys try new ready everyday daily match matches matched fit fits fan fans style
quality worth look looking want wants need needs made designed day make makes made easy simply really truly
well one right find found top rated rating ratings review reviews shoppers people loving cool nice
you your yours we our it its this that these those
""".split()
)


@lru_cache(maxsize=16_384)
def normalize(text: str) -> str:
    """Lowercase ASCII-folded text with collapsed whitespace (for comparisons only)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(text.lower().split())


def words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


@lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """A deliberately light stemmer: enough to match 'softness' with 'soft', 'wigs' with 'wig'."""
    w = word.replace("'", "").replace("’", "")
    for suffix in ("nesses", "ness", "ings", "ing", "ies", "ly", "es", "s"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if suffix == "ies":
                w += "y"
            break
    return w


@lru_cache(maxsize=65_536)
def content_stems(text: str) -> tuple[str, ...]:
    """Stems of the content words (memoized: titles, features and profile terms recur per request)."""
    return tuple(stem(w) for w in words(text) if w not in STOPWORDS and len(w) > 1)


def vocab(texts: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for t in texts:
        out.update(content_stems(t))
    return out


@lru_cache(maxsize=16_384)
def word_set(text: str) -> frozenset[str]:
    return frozenset(words(text))


def jaccard(a: str, b: str) -> float:
    sa, sb = word_set(a), word_set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / max(1, len(sa | sb))


def near_duplicate(a: str, b: str, *, threshold: float = 0.75) -> bool:
    return normalize(a) == normalize(b) or jaccard(a, b) >= threshold


def clip(text: str, max_chars: int) -> str:
    """Cut at a word boundary, without trailing punctuation."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text.rstrip(" .,;:-–—")
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(" .,;:-–—")


def one_line(text: str, max_chars: int = 200) -> str:
    """Flatten untrusted text for a prompt: no newlines, no format markers, bounded length."""
    text = re.sub(r"[\r\n\t]+", " ", text)
    # Neutralise anything that looks like our answer scaffold so a title cannot fake a rank line.
    text = re.sub(r"(?i)\b(rank)\s*#?\s*(\d+)\s*[:.)\]]", r"\1 \2 -", text)
    text = re.sub(r"(?i)\b(rank|product|reason)\s*[:#]", r"\1 -", text)
    text = text.replace("[", "(").replace("]", ")")
    return clip(text, max_chars)
