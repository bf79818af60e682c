"""From review histories to profiles: generate, parse, repair, ground, check; extractive fallback.

Pure functions (no DB, no broker): offline evaluation calls :func:`profile_from_reviews` or
:func:`profiles_from_histories` directly. The LLM's output is never trusted:

1. JSON profile: code fences stripped, the object extracted and repaired (quotes, trailing commas,
   unquoted keys, unclosed brackets), keys mapped to the four fields, strings coerced to lists,
   terms normalised, length-limited and de-duplicated across fields;
2. grounding: a term is kept only if every content word of it (lightly stemmed) occurs in the user's
   reviews / item titles or in the domain vocabulary — invented terms are dropped;
3. summary: split into sentences, list markers and preambles removed, exactly three kept; missing
   ones are completed from the extractive summary (``summary_source="mixed"``);
4. one retry (slightly warmer sampling) for users whose output was unusable, then the extractive
   profiler (vocabulary terms in the reviews with rating and negation cues), ``source="extractive"``.
Users without usable review text are ``status="cold_start"`` with no terms and no summary.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from services.profiler.history import History, build_history
from services.profiler.prompts import (
    FIELDS,
    PROFILE_SCHEMA,
    PROMPT_VERSION,
    SYSTEM,
    profile_prompt,
    summary_prompt,
)
from shared.llm import LLM
from shared.logging import get_logger
from shared.text import content_stems, profile_text, tokens
from shared.vocab import build_vocabulary, find_vocab_terms

log = get_logger(__name__)

MAX_TERM_WORDS = 4
MAX_TERM_CHARS = 48
RETRY_TEMPERATURE = 0.4
NEGATIONS = frozenset(
    "not no never dont didnt doesnt isnt wasnt wont cant couldnt without nor lack lacks".split()
)
NEGATIVE_WORDS = frozenset(
    "hate hated disappointed disappointing terrible awful worst horrible broke broken returned return "
    "refund useless waste poor cheap flimsy irritated irritation rash itchy sticky greasy leaked".split()
)
_KEY_ALIASES = {
    "preferred_products": "preferred_products",
    "products": "preferred_products",
    "preferred": "preferred_products",
    "liked_features": "liked_features",
    "likes": "liked_features",
    "features": "liked_features",
    "liked": "liked_features",
    "dislikes": "dislikes",
    "dislike": "dislikes",
    "disliked": "dislikes",
    "potential_interests": "potential_interests",
    "interests": "potential_interests",
    "potential": "potential_interests",
}


@dataclass
class StructuredProfile:
    preferred_products: list[str] = field(default_factory=list)
    liked_features: list[str] = field(default_factory=list)
    dislikes: list[str] = field(default_factory=list)
    potential_interests: list[str] = field(default_factory=list)

    def terms(self) -> list[str]:
        return [t for name in FIELDS for t in getattr(self, name)]

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)


@dataclass
class ProfileResult:
    user_id: str
    status: str  # ready | cold_start
    source: str  # llm | extractive (of the structured profile)
    summary_source: str  # llm | mixed | extractive
    profile: StructuredProfile
    summary: str
    model_name: str
    prompt_version: str = PROMPT_VERSION
    n_reviews: int = 0
    last_review_ts: int | None = None
    dropped_terms: list[str] = field(default_factory=list)
    error: str | None = None

    def text(self) -> str:
        """The text embedded for retrieval (``shared.text.profile_text``: no dislikes)."""
        p = self.profile
        return profile_text(
            summary=self.summary,
            preferred_products=p.preferred_products,
            liked_features=p.liked_features,
            potential_interests=p.potential_interests,
        )


# --------------------------------------------------------------------------- JSON parsing and repair


def _strip_fences(raw: str) -> str:
    raw = re.sub(r"```(?:json|JSON)?", "", raw)
    return raw.strip()


def _close_brackets(text: str) -> str:
    """Append what is needed to close unterminated strings, lists and objects."""
    stack: list[str] = []
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    tail = '"' if in_str else ""
    return re.sub(r",\s*$", "", text + tail) + "".join(reversed(stack))


def _repair(text: str) -> str:
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    text = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", text)))
    if '"' not in text:
        text = text.replace("'", '"')
    else:  # single-quoted keys/values next to double-quoted ones
        text = re.sub(r"(?<=[{\[,:])\s*'([^'\"]*)'\s*(?=[,:}\]])", r'"\1"', text)
    text = re.sub(r"([{,]\s*)([A-Za-z_][\w ]*?)\s*:", lambda m: f'{m.group(1)}"{m.group(2)}":', text)
    text = re.sub(r",\s*([}\]])", r"\1", text)  # trailing commas
    return text


def parse_json_object(raw: str | None) -> dict[str, Any] | None:
    """The first JSON object in ``raw``, repaired if needed; None when nothing usable is there."""
    if not raw:
        return None
    text = _strip_fences(raw)
    start = text.find("{")
    if start < 0:
        return None
    end = text.rfind("}")
    body = text[start : end + 1] if end > start else text[start:]
    for candidate in (
        body,
        _repair(body),
        _close_brackets(_repair(body)),
        _close_brackets(_repair(text[start:])),
    ):
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


# --------------------------------------------------------------------------- terms


def normalize_term(term: Any) -> str | None:
    """Lower-case, trim punctuation/articles, refuse sentences and empty or content-free terms."""
    if not isinstance(term, str | int | float) or isinstance(term, bool):
        return None
    text = re.sub(r"\s+", " ", str(term)).strip().lower()
    text = re.sub(r"^[\s\-*•\d.)(\"'`:]+|[\s\"'`.,;:!?)(]+$", "", text)
    text = re.sub(r"^(?:a|an|the|some)\s+", "", text)
    if not text or len(text) > MAX_TERM_CHARS or len(text.split()) > MAX_TERM_WORDS:
        return None
    if not content_stems(text):
        return None
    return text


def coerce_terms(value: Any) -> list[str]:
    """A list of raw terms from whatever the model produced: list, comma/semicolon string, nested."""
    if value is None:
        return []
    if isinstance(value, str):
        return [p for p in re.split(r"[,;\n]|\band\b", value) if p.strip()]
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, Sequence):
        out: list[str] = []
        for v in value:
            out.extend(coerce_terms(v) if isinstance(v, list | tuple | Mapping) else [v])
        return out
    return [value]


def profile_from_json(data: Mapping[str, Any], *, max_terms: int) -> StructuredProfile:
    """Map keys (aliases accepted), coerce and normalise terms, de-duplicate across fields."""
    fields: dict[str, list[str]] = {name: [] for name in FIELDS}
    for key, value in data.items():
        name = _KEY_ALIASES.get(re.sub(r"[\s\-]+", "_", str(key).strip().lower()))
        if name:
            fields[name].extend(t for t in (normalize_term(x) for x in coerce_terms(value)) if t)
    seen: set[tuple[str, ...]] = set()
    profile = StructuredProfile()
    for name in FIELDS:
        kept: list[str] = []
        for term in fields[name]:
            stems = tuple(content_stems(term))
            if stems in seen:
                continue
            seen.add(stems)
            kept.append(term)
        setattr(profile, name, kept[:max_terms])
    return profile


def ground(
    profile: StructuredProfile, *, evidence: str, vocab: Sequence[str]
) -> tuple[StructuredProfile, list[str]]:
    """Keep the terms whose every content word occurs in the evidence or the vocabulary."""
    allowed = set(content_stems(evidence)) | {s for v in vocab for s in content_stems(v)}
    grounded = StructuredProfile()
    dropped: list[str] = []
    for name in FIELDS:
        kept = []
        for term in getattr(profile, name):
            stems = content_stems(term)
            if stems and all(s in allowed for s in stems):
                kept.append(term)
            else:
                dropped.append(term)
        setattr(grounded, name, kept)
    return grounded, dropped


def usable_profile(profile: StructuredProfile) -> bool:
    return bool(profile.preferred_products or profile.liked_features) and len(profile.terms()) >= 2


# --------------------------------------------------------------------------- summary

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
        if not s or s.endswith(":") or _JUNK.search(s):
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


# --------------------------------------------------------------------------- extractive profiler


def _polarity(rating: float, sentence_tokens: list[str], start: int) -> int:
    window = sentence_tokens[max(0, start - 3) : start]
    if any(t in NEGATIONS for t in window):
        return -1
    if rating <= 3 and any(t in NEGATIVE_WORDS for t in sentence_tokens):
        return -1
    if rating >= 4:
        return 1
    if rating <= 2:
        return -1
    return 0


def _occurrences(sentence_tokens: list[str], term: str) -> list[int]:
    needle = tokens(term)
    n = len(needle)
    return [i for i in range(len(sentence_tokens) - n + 1) if sentence_tokens[i : i + n] == needle]


def extractive_profile(
    history: History, vocab: Sequence[str], *, max_terms: int = 8
) -> tuple[StructuredProfile, list[str]]:
    """Deterministic profile and three summary sentences from vocabulary terms in the reviews."""
    entries = history.all_entries
    if not vocab:  # no catalog yet: the user's own words are the vocabulary
        vocab = build_vocabulary([f"{e.item_title}. {e.title}. {e.text}" for e in entries], k=50)
    products: Counter[str] = Counter()
    likes: Counter[str] = Counter()
    dislikes: Counter[str] = Counter()
    for e in entries:
        if e.rating >= 4:
            products.update(find_vocab_terms(e.item_title, vocab))
        for sentence in split_sentences(f"{e.title}. {e.text}"):
            toks = tokens(sentence)
            for term in find_vocab_terms(sentence, vocab):
                for start in _occurrences(toks, term)[:1]:
                    polarity = _polarity(e.rating, toks, start)
                    if polarity > 0:
                        likes[term] += 1
                    elif polarity < 0:
                        dislikes[term] += 1
    if not products:  # nothing rated 4+: what they bought at all
        for e in entries:
            products.update(find_vocab_terms(e.item_title, vocab))
    rank = {v: i for i, v in enumerate(vocab)}

    def top(counter: Counter[str], exclude: set[str]) -> list[str]:
        items = [t for t in counter if t not in exclude and counter[t] > 0]
        return sorted(items, key=lambda t: (-counter[t], rank.get(t, len(rank)), t))[:max_terms]

    preferred = top(products, set())
    liked = top(Counter({t: c - dislikes[t] for t, c in likes.items()}), set(preferred))
    disliked = top(Counter({t: c - likes[t] for t, c in dislikes.items()}), set(preferred) | set(liked))
    used = set(content_stems(" ".join(preferred + liked + disliked)))
    seen = set(content_stems(history.evidence))
    related = [v for v in vocab if set(content_stems(v)) & used and not set(content_stems(v)) <= seen]
    profile = profile_from_json(
        {
            "preferred_products": preferred,
            "liked_features": liked,
            "dislikes": disliked,
            "potential_interests": related,
        },
        max_terms=max_terms,
    )

    ratings = [e.rating for e in entries]
    avg = sum(ratings) / len(ratings) if ratings else 0.0
    n = len(entries)
    s1 = (
        f"This customer mostly buys {_join(profile.preferred_products[:3])} "
        f"({n} review{'s' if n != 1 else ''}, average rating {avg:.1f} out of 5)."
        if profile.preferred_products
        else f"This customer has reviewed {n} product{'s' if n != 1 else ''} "
        f"with an average rating of {avg:.1f} out of 5."
    )
    if profile.liked_features:
        s2 = f"They value {_join(profile.liked_features[:3])}"
        s2 += f" and dislike {_join(profile.dislikes[:2])}." if profile.dislikes else "."
    elif profile.dislikes:
        s2 = f"They complain about {_join(profile.dislikes[:3])}."
    else:
        s2 = "Their reviews do not name clear priorities yet."
    nxt = profile.potential_interests[:2] or profile.preferred_products[:2]
    s3 = (
        f"They are likely to buy {_join(nxt)} next."
        if nxt
        else "Their next purchase is likely similar to what they already bought."
    )
    return profile, [s1, s2, s3]


def _join(terms: Sequence[str]) -> str:
    terms = list(terms)
    return terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]


# --------------------------------------------------------------------------- orchestration


def _safe_generate(llm: LLM | None, prompts: list[str], **kwargs: Any) -> tuple[list[str | None], str | None]:
    """The LLM's outputs, or Nones plus the error when it failed (never raises)."""
    if llm is None or not prompts:
        return [None] * len(prompts), ("no llm" if llm is None else None)
    try:
        out = llm.generate(prompts, system=SYSTEM, **kwargs)
    except Exception as exc:  # LLMUnavailable, LLMTimeout, or a broken backend: fall back, loudly
        log.warning(
            "llm generation failed", extra={"error": f"{type(exc).__name__}: {exc}", "n": len(prompts)}
        )
        return [None] * len(prompts), f"{type(exc).__name__}: {exc}"
    if not isinstance(out, list) or len(out) != len(prompts):
        return [None] * len(prompts), "llm returned the wrong number of outputs"
    return [o if isinstance(o, str) else None for o in out], None


def profiles_from_histories(
    histories: Sequence[History],
    *,
    llm: LLM | None,
    vocab: Sequence[str],
    max_terms: int = 8,
    max_new_tokens: int = 200,
    summary_tokens: int = 160,
) -> list[ProfileResult]:
    """Profiles for several users, generated in one batch per step (JSON profile, then summary)."""
    model_name = getattr(llm, "name", "none") if llm is not None else "none"
    results: list[ProfileResult | None] = [None] * len(histories)
    live: list[int] = []
    for i, h in enumerate(histories):
        if h.usable:
            live.append(i)
        else:
            results[i] = ProfileResult(
                user_id=h.user_id,
                status="cold_start",
                source="extractive",
                summary_source="extractive",
                profile=StructuredProfile(),
                summary="",
                model_name=model_name,
                n_reviews=h.n_reviews,
                last_review_ts=h.last_review_ts,
            )
    blocks = {i: histories[i].render() for i in live}
    errors: dict[int, str] = {}

    # Structured profile: generate → parse → ground; one warmer retry for the unusable ones.
    profiles: dict[int, tuple[StructuredProfile, list[str]]] = {}
    todo = list(live)
    for attempt, temperature in enumerate((0.0, RETRY_TEMPERATURE)):
        if not todo or llm is None:
            break
        outs, err = _safe_generate(
            llm,
            [profile_prompt(blocks[i]) for i in todo],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            json_schema=PROFILE_SCHEMA,
        )
        failed = []
        for i, raw in zip(todo, outs, strict=True):
            data = parse_json_object(raw)
            if data is not None:
                prof, dropped = ground(
                    profile_from_json(data, max_terms=max_terms), evidence=histories[i].evidence, vocab=vocab
                )
                if usable_profile(prof):
                    profiles[i] = (prof, dropped)
                    continue
                errors[i] = f"profile unusable after grounding (attempt {attempt + 1})"
            else:
                errors[i] = err or f"no JSON object in the output (attempt {attempt + 1})"
            failed.append(i)
        todo = failed

    # Summary: generate → clean; one retry for users with no usable sentence.
    summaries: dict[int, list[str]] = {}
    todo = list(live)
    for temperature in (0.0, RETRY_TEMPERATURE):
        if not todo or llm is None:
            break
        outs, _ = _safe_generate(
            llm,
            [summary_prompt(blocks[i]) for i in todo],
            max_new_tokens=summary_tokens,
            temperature=temperature,
        )
        failed = []
        for i, raw in zip(todo, outs, strict=True):
            sentences = clean_sentences(raw)
            if sentences:
                summaries[i] = sentences
            else:
                failed.append(i)
        todo = failed

    for i in live:
        h = histories[i]
        fallback_profile, fallback_sentences = extractive_profile(h, vocab, max_terms=max_terms)
        if i in profiles:
            prof, dropped = profiles[i]
            source = "llm"
        else:
            prof, dropped, source = fallback_profile, [], "extractive"
        summary, summary_source = three_sentences(summaries.get(i, []), fallback_sentences)
        results[i] = ProfileResult(
            user_id=h.user_id,
            status="ready",
            source=source,
            summary_source=summary_source,
            profile=prof,
            summary=summary,
            model_name=model_name if (source == "llm" or summary_source != "extractive") else "none",
            n_reviews=h.n_reviews,
            last_review_ts=h.last_review_ts,
            dropped_terms=dropped,
            error=errors.get(i) if source == "extractive" else None,
        )
    return [r for r in results if r is not None]


def profile_from_reviews(
    reviews: Sequence[Any],
    item_titles: Mapping[str, str],
    *,
    llm: LLM | None,
    vocab: Sequence[str],
    user_id: str = "",
    budget_chars: int = 3000,
    max_terms: int = 8,
) -> ProfileResult:
    """One user's profile from raw review dicts (Amazon schema) and ``{parent_asin: title}``."""
    uid = user_id or (
        str(reviews[0].get("user_id", "")) if reviews and isinstance(reviews[0], Mapping) else ""
    )
    history = build_history(uid, reviews, item_titles, budget_chars=budget_chars)
    return profiles_from_histories([history], llm=llm, vocab=vocab, max_terms=max_terms)[0]
