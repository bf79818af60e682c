"""The LLM's profile output made usable: JSON extracted and repaired, then mapped to a structured profile.

Never trusted: code fences stripped, the first object extracted and repaired (quotes, trailing commas,
unquoted keys, unclosed brackets/strings), keys mapped to the four fields (aliases accepted), strings
coerced to lists, terms normalised, length-limited and de-duplicated across fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from services.profiler.prompts import FIELDS
from services.profiler.structured import StructuredProfile
from shared.text import content_stems

MAX_TERM_WORDS = 4
MAX_TERM_CHARS = 48
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


# --------------------------------------------------------------------------- JSON parsing and repair


def _strip_fences(raw: str) -> str:
    raw = re.sub(r"```(?:json|JSON)?", "", raw)
    return raw.strip()


def _close_brackets(text: str) -> str:
    """Append what is needed to close unterminated strings, lists and objects."""
    from shared.llm import open_json_state

    stack, in_str, _ = open_json_state(text)
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
