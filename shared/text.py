"""The one set of text helpers: tokenizer, stop words, stemmer, and the comparisons built on them.

Profile grounding (profiler), reason validation (explainer), template reasons, the domain vocabulary
and the evaluation's reason metrics all tokenize and stem with these functions, so a word that counts
as grounded in one place counts the same everywhere.

* **Tokens**: ASCII-folded, lower-cased runs of ``[a-z0-9]``; apostrophes are dropped first
  ("don't" -> "dont").
* **Content tokens**: not a stop word, at least 2 characters, not purely numeric.
* **Stems**: a light suffix stemmer (plurals, -ness, -ing) that maps "serums" to "serum", "brushes" to
  "brush" and "softness" to "soft"; enough for matching, not linguistics.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

_TOKEN = re.compile(r"[a-z0-9]+")
_APOSTROPHES = str.maketrans("", "", "'\u2019")
STOP_WORDS: frozenset[str] = frozenset(
    """
a about above after again against all almost also am among an and any are aren arent as at be because
been before being below between both but by can cannot cant could couldnt did didnt do does doesnt doing
dont down during each either else ever every few for from further get gets got had hadnt has hasnt have
havent having he her here hers herself him himself his how however i if im in into is isnt it its itself
ive just least less let like likes liked ll made make makes many may me might more most much must mustnt
my myself need needs neither no nor not now of off often on once one only or other others otherwise our
ours ourselves out over own per quite rather re really s same shall she should shouldnt since so some
such t than that thats the their theirs them themselves then there therefore these they theyre this
those though through thus to too under until up upon us use used uses using ve very via was wasnt we
well were werent what when where whether which while who whom whose why will with within without wont
would wouldnt yet you your youre yours yourself yourselves
"""
    # Words about the shopper, not the product: a profile or a reason made of them claims nothing.
    """
user users customer customers buy buys bought purchase purchases purchased likely future value values
prefer prefers preference preferences interest interested interests
"""
    # Catalog noise: units, packaging counts and marketing words say nothing about a taste.
    """
oz fl inch inches ml mm cm ft lb lbs kg pcs pc pack packs count ct com www http https none new free
amazon item items product products
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


def tokens(text: str) -> list[str]:
    """All tokens of ``text`` (see the module docstring), stop words included."""
    return _TOKEN.findall(normalize(text.translate(_APOSTROPHES)))


words = tokens  # the name the reason code reads best with


def is_content(token: str) -> bool:
    return len(token) >= 2 and not token.isdigit() and token not in STOP_WORDS


@lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """The light stemmer of the module docstring."""
    w = word.translate(_APOSTROPHES)
    for suffix in ("nesses", "ness", "ings", "ing"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            return w[: -len(suffix)]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes", "zes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


@lru_cache(maxsize=65_536)
def content_stems(text: str) -> tuple[str, ...]:
    """Stems of the content tokens, in order (memoized: titles, features and terms recur per request)."""
    return tuple(stem(t) for t in tokens(text) if is_content(t))


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


def profile_text(
    *,
    summary: str | None,
    preferred_products: Iterable[str] = (),
    liked_features: Iterable[str] = (),
    potential_interests: Iterable[str] = (),
) -> str:
    """The text embedded for a user profile: the summary plus its positive terms.

    Dislikes are never part of it (they are a negative signal, not a taste to match).
    """
    likes = [str(t) for t in [*preferred_products, *liked_features] if t]
    interests = [str(t) for t in potential_interests if t]
    parts = [
        summary or "",
        "Likes: " + ", ".join(likes) if likes else "",
        "Interested in: " + ", ".join(interests) if interests else "",
    ]
    return " ".join(x for x in parts if x)
