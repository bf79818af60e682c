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

import html
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


def dislikes_text(dislikes: Iterable[str]) -> str:
    """The text embedded for a profile's dislikes (its own vector, a negative signal); "" without any.

    One definition: the profiler stores this vector with the profile, and the retriever embeds the same
    text when a stored profile lacks it.
    """
    terms = [str(t).strip() for t in dislikes if str(t).strip()]
    return "Dislikes: " + ", ".join(terms) if terms else ""


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


# --------------------------------------------------------------------------- untrusted text (issue 14)
# Review text, item titles, features and descriptions come from users and sellers: they are DATA. Before
# any template or prompt they go through :func:`strip_markup` (templates, display) or
# :func:`sanitize_untrusted` (prompts, profile evidence); a profile term or generated line that still
# looks like markup, a link or an instruction is refused by :func:`unsafe_term`.

_BLOCK_TAGS = re.compile(r"<\s*(script|style|iframe|object|embed|svg|noscript)\b[^>]*>.*?(?:<\s*/\s*\1\s*>|$)",
                         re.IGNORECASE | re.DOTALL)
_COMMENTS = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_TAGS = re.compile(r"<\s*/?\s*[a-zA-Z!][^<>]{0,1000}?(?:>|$)")
_ANGLE = re.compile(r"[<>]")
_URLS = re.compile(
    r"(?i)\b(?:(?:https?|ftp|file|data|javascript)\s*:\s*//?\S*|www\.\S+|[\w.+-]+@[\w-]+\.[\w.]+"
    r"|(?:[a-z0-9-]+\.)+(?:com|net|org|io|ru|cn|xyz|info|biz|co|ly|me|app|dev|top|site|online|shop|link)"
    r"(?:/\S*)?\b)"
)
_CHAT_TOKENS = re.compile(r"<\|[^|>]{0,40}\|>|\[/?(?:INST|SYS)\]|<<\s*/?SYS\s*>>|```+|~~~+", re.IGNORECASE)
_JSONISH = re.compile(r"\{[^{}]{0,2000}\}|\[[^\[\]]{0,2000}\]|[{}\[\]]")
# Phrases that address the model instead of describing a product. A sentence with one is dropped whole.
_INSTRUCTION = re.compile(
    r"(?i)"
    r"\b(?:ignore|disregard|forget|override|bypass|skip)\b[^.!?\n]{0,40}?"
    r"\b(?:instructions?|prompts?|rules?|directions?|context|guidelines?|above|previous|prior|everything)\b"
    r"|\b(?:new|updated|system|hidden|secret)\s+(?:instructions?|prompt|rules?|task)\b"
    r"|(?:^|[\s\"'(])(?:system|assistant|user|developer)\s*[:>]"
    r"|\byou\s+(?:are|must|will|should)\s+(?:now\s+)?(?:an?\s+)?(?:ai|assistant|model|chatbot|required|instructed)\b"
    r"|\b(?:act|behave|pretend|roleplay)\s+(?:as|like|to\s+be)\b"
    r"|\b(?:respond|reply|answer|output|print|write|say|return|repeat|add|list|put|include|insert|set)\b"
    r"[^.!?\n]{0,40}?\b(?:json|verbatim|the\s+following|preferred[_ ]products?|liked[_ ]features?"
    r"|dislikes|potential[_ ]interests?|profile|rank(?:ing)?s?)\b"
    r"|\bfrom\s+now\s+on\b|\bjailbreak\w*\b|\bprompt\s+injection\b|\bdo\s+anything\s+now\b"
    r"|\brank\s*#?\s*\d+\s*[:.)\]-]|\b(?:product|reason|rank)\s*[:#]"
    r"|\b(?:preferred_products|liked_features|potential_interests)\b"
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+|\s+[-–—]\s+(?=\S)")
_MARKUP_CHARS = re.compile(r"[<>{}\[\]|`\\@#$%^*=~]")


def _has_markup_hint(text: str) -> bool:
    return any(c in text for c in "<&{[`|") or "://" in text or "www." in text.lower()


@lru_cache(maxsize=16_384)
def strip_markup(text: str) -> str:
    """Text without HTML (script/style blocks with their content, comments, tags, entities), chat tokens,
    code fences and links; whitespace collapsed. Titles and features get this before any template."""
    if not text:
        return ""
    if not _has_markup_hint(text) and "." not in text and "@" not in text:
        return " ".join(text.split())
    out = _CHAT_TOKENS.sub(" ", text)
    for _ in range(2):  # entities may hide tags ("&lt;script&gt;"): unescape, then strip again
        out = _BLOCK_TAGS.sub(" ", out)
        out = _COMMENTS.sub(" ", out)
        out = _TAGS.sub(" ", out)
        out = html.unescape(out)
    out = _ANGLE.sub(" ", out)
    out = _CHAT_TOKENS.sub(" ", out)
    out = _URLS.sub(" ", out)
    return " ".join(out.split())


def has_link(text: str) -> bool:
    """True when ``text`` carries a URL, a bare domain or an e-mail address."""
    return bool(_URLS.search(text or ""))


def instruction_like(text: str) -> bool:
    """True when ``text`` addresses the model (``ignore previous instructions``, ``system:``,
    ``Rank 1:``, ``respond with JSON``…) instead of describing a product."""
    return bool(_INSTRUCTION.search(text or ""))


@lru_cache(maxsize=16_384)
def sanitize_untrusted(text: str) -> str:
    """Untrusted text made safe to show a model and to ground profile terms in: :func:`strip_markup`,
    JSON-ish blobs removed, and every sentence that reads like an instruction dropped whole (so the
    words it tried to plant, e.g. "hacked", are gone too)."""
    out = strip_markup(text or "")
    if not out:
        return ""
    out = _JSONISH.sub(" ", out)
    kept = [s for s in _SENTENCE_SPLIT.split(out) if s and s.strip() and not instruction_like(s)]
    return " ".join(" ".join(kept).split())


@lru_cache(maxsize=16_384)
def unsafe_term(term: str) -> bool:
    """A profile term (or a short generated phrase) that must not be stored: markup or link characters,
    an instruction-like phrase, or a content word repeated ("hacked hacked hacked")."""
    if not term:
        return True
    if _MARKUP_CHARS.search(term) or _URLS.search(term) or "&" in term and html.unescape(term) != term:
        return True
    if instruction_like(term):
        return True
    toks = [t for t in tokens(term) if is_content(t)]
    return len(toks) != len(set(toks))
