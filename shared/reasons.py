"""Template backend: fast, deterministic per (user, item), varied, grounded reasons.

Pure Python with no heavy imports: the explainer, the gateway's local fallback and the evaluation share it.

* Grounding: a profile term is only mentioned when every content word of it occurs in the item's own
  title/features/category; the other slots are filled from the item's own facts (short title, a
  feature, category, rating, rating count). Nothing else is ever claimed about an item.
* Determinism: the pattern is chosen by a stable hash of (user, item); the same request gives the
  same answer in every process.
* Variety: the de-dup pass walks the patterns until a reason's pattern is unused in the list and
  it is not a near-duplicate (token Jaccard >= 0.75) of an earlier reason.
* Cold start (no profile terms match): reasons come from item facts and popularity only.
* Untrusted text: titles, features and categories go through ``shared.text.strip_markup`` (HTML tags
  and entities, script blocks, links) before any slot is filled, and profile terms that look like
  markup, links or instructions (``shared.text.unsafe_term``) are never used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.records import get_field
from shared.text import clip, content_stems, near_duplicate, normalize, strip_markup, unsafe_term, vocab, words

TEMPLATE_MODEL = "template-v1"
MAX_TERM_CHARS = 40
MAX_FEATURE_CHARS = 70
MAX_NAME_WORDS = 6
_DANGLING = frozenset("for with and or of to in on by the a an & - +".split())


@dataclass(frozen=True)
class Pattern:
    id: str
    text: str
    needs: frozenset[str] = field(default_factory=frozenset)


def _p(pid: str, text: str, *needs: str) -> Pattern:
    return Pattern(pid, text, frozenset(needs))


# Patterns that use a profile term which the item demonstrably has.
PROFILE_PATTERNS: tuple[Pattern, ...] = (
    _p("p1", "Picked for your love of {term}: {name}{rating_tail}.", "term"),
    _p("p2", "You keep coming back to {term}, and {name} delivers it.", "term"),
    _p("p3", "Made for fans of {term} like you: {feature}.", "term", "feature"),
    _p("p4", "{Name} brings the {term} you look for.", "term"),
    _p("p5", "Because you value {term}: {name}, {rating}/5 from {count} reviews.", "term", "rating", "count"),
    _p("p6", "Your {term} pick: {name}.", "term"),
    _p("p7", "More {term}, less compromise. {Name}{rating_tail}.", "term"),
    _p("p8", "{Term} is your thing, and this {category} pick has it.", "term", "category"),
    _p("p9", "Into {term}? {Name} shows it: {feature}.", "term", "feature"),
    _p("p10", "Hand-picked for a fan of {term}: {name}.", "term"),
)
# Patterns from item facts and popularity only (cold start, or no term matches this item).
FACT_PATTERNS: tuple[Pattern, ...] = (
    _p("f1", "Loved by {count} shoppers, {name} averages {rating}/5.", "rating", "count"),
    _p("f2", "Rated {rating}/5, a standout in {category}.", "category", "rating"),
    _p("f3", "Highlight of {name}: {feature}.", "feature"),
    _p("f4", "Shoppers keep choosing {name}, with {count} reviews and counting.", "count"),
    _p("f5", "Discover {name}, a popular {category} pick.", "category"),
    _p("f6", "Try {name}, rated {rating}/5 across {count} ratings.", "rating", "count"),
    _p("f7", "{Name}: {feature}.", "feature"),
    _p("f8", "{Name} is trending in {category}.", "category"),
    _p("f9", "Worth a look: {name}{rating_tail}."),
    _p("f10", "{Name}, a fresh pick for you."),
    _p("f11", "{Name} is well reviewed at {rating}/5.", "rating"),
    _p("f12", "Meet {name}, something new from {category}.", "category"),
    _p("f13", "{Name} earns {rating}/5 from shoppers.", "rating"),
    _p("f14", "{count} shoppers have reviewed {name}.", "count"),
    _p("f15", "Looking for {category}? Meet {name}.", "category"),
    _p("f16", "{Name} stands out in {category}.", "category"),
    _p("f17", "Say hello to {name}."),
    _p("f18", "{Name} could be your next favorite."),
)


def _text(item: Any, key: str) -> str:
    """An item's text field without markup (titles and categories come from sellers: untrusted)."""
    value = get_field(item, key, "") or ""
    return strip_markup(value) if isinstance(value, str) else ""


def _features(item: Any) -> list[str]:
    feats = get_field(item, "features", None) or []
    return [f for f in (strip_markup(x) for x in feats if isinstance(x, str)) if f]


def stable_index(*parts: object, modulo: int) -> int:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % max(1, modulo)


def profile_terms(profile: Any | None, summary: str | None = None) -> list[str]:
    """Positive profile phrases in priority order (liked features first); dislikes never included."""
    terms: list[str] = []
    if profile is not None:
        for key in ("liked_features", "preferred_products", "potential_interests"):
            for t in get_field(profile, key, None) or []:
                if isinstance(t, str) and t.strip() and not unsafe_term(t):
                    terms.append(clip(t.strip().lower(), MAX_TERM_CHARS))
    if summary and not terms:
        # No structured profile (e.g. the re-rank): single content words of the summary, grounded like terms.
        terms.extend(w for w in words(summary) if len(w) > 3 and content_stems(w))
    seen: set[str] = set()
    out = []
    for t in terms:
        key = normalize(t)
        if key and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def dislike_stems(profile: Any | None) -> set[str]:
    return (
        vocab(t for t in (get_field(profile, "dislikes", None) or []) if isinstance(t, str)) if profile else set()
    )


def item_vocab(item: Any) -> set[str]:
    return vocab([_text(item, "title"), *_features(item), _text(item, "main_category")])


def matched_terms(terms: Sequence[str], item: Any, *, avoid_stems: set[str] | None = None) -> list[str]:
    """Profile terms whose every content word occurs in the item's own text (grounded)."""
    iv = item_vocab(item)
    out = []
    for t in terms:
        stems = content_stems(t)
        if stems and all(s in iv for s in stems) and not (avoid_stems and avoid_stems & set(stems)):
            out.append(t)
    return out


def short_name(item: Any) -> str:
    title = _text(item, "title")
    for sep in (" | ", " - ", " – ", " — ", ",", "(", ":", ";", " with ", " for "):
        if sep in title:
            head = title.split(sep, 1)[0].strip()
            if len(head) >= 3 and (sep.strip() not in ("with", "for") or len(head.split()) >= 2):
                title = head
    kept = title.split()[:MAX_NAME_WORDS]
    # Do not end on a dangling connective or number ("Toys Gifts for 3").
    while len(kept) > 2 and (kept[-1].lower() in _DANGLING or kept[-1].strip(".,;:-").isdigit()):
        kept.pop()
    name = " ".join(kept).rstrip(" .,;:-–—&")
    return name or "this item"


def pick_feature(item: Any, prefer: Sequence[str] = ()) -> str | None:
    feats = _features(item)
    if not feats:
        return None
    prefer_stems = set(content_stems(" ".join(prefer)))
    if prefer_stems:
        for f in feats:
            if prefer_stems & set(content_stems(f)):
                return clip(f, MAX_FEATURE_CHARS)
    return clip(feats[0], MAX_FEATURE_CHARS)


def item_slots(item: Any, term: str | None) -> dict[str, str]:
    """The facts a pattern may use for this item; a missing fact has no slot."""
    slots: dict[str, str] = {"name": short_name(item)}
    feature = pick_feature(item, [term] if term else [])
    if feature:
        slots["feature"] = (
            feature[0].lower() + feature[1:]
            if feature[:2].isalpha() and not feature[:2].isupper()
            else feature
        )
    rating = get_field(item, "average_rating", None)
    count = get_field(item, "rating_number", None)
    if isinstance(rating, int | float) and rating > 0:
        slots["rating"] = f"{float(rating):.1f}"
    if isinstance(count, int) and count > 0:
        slots["count"] = f"{count:,}"
    category = _text(item, "main_category")
    if category:
        slots["category"] = category
    if term:
        slots["term"] = term
    tail = ""
    if "rating" in slots and "count" in slots:
        tail = f", {slots['rating']}/5 from {slots['count']} reviews"
    elif "rating" in slots:
        tail = f", rated {slots['rating']}/5"
    slots["rating_tail"] = tail
    return slots


# Extra words that claim nothing about the item: they vary the line, never its facts.
LEADS = tuple(
    "Just for you:|Our pick:|Heads up:|Spotlight:|New for you:|Top find:|Handpicked:|Quick pick:|Good news:|"
    "Have a look:|Today's find:|Fresh find:|Staff pick:|On our radar:|Picked out:|Don't miss:".split("|")
)
CLOSERS = tuple(
    "A smart pick.|Don't miss it.|Treat yourself.|An easy choice.|Take a closer look.|Ready when you are.|"
    "Go on, have a look.|Yours to discover.|See what the fuss is about.|Give it a try.|Check it out.|"
    "Could be a keeper.|Nice find.|Good to know.".split("|")
)
MAX_REASON_CHARS = 170


def _extras(pattern: Pattern, slots: dict[str, str]) -> list[str]:
    """Second sentences for a body: another of the item's own facts, or a claim-free closer."""
    used = pattern.needs | (
        {"rating", "count"} if "{rating_tail}" in pattern.text and slots["rating_tail"] else set()
    )
    out = [""]
    if "rating" in slots and "rating" not in used:
        out.append(f"Rated {slots['rating']}/5.")
    if "count" in slots and "count" not in used:
        out.append(f"{slots['count']} reviews so far.")
    if "feature" in slots and "feature" not in used:
        out.append(f"Highlight: {slots['feature']}.")
    if "category" in slots and "category" not in used:
        out.append(f"Found in {slots['category']}.")
    return out + list(CLOSERS)


def render(pattern: Pattern, slots: dict[str, str], *, variant: int = 0) -> str:
    """The pattern filled with the item's slots; ``variant`` picks a lead and a second sentence."""
    values = dict(slots)
    for key in ("name", "term"):
        if key in values:
            values[key.capitalize()] = values[key][:1].upper() + values[key][1:]
    body = pattern.text.format(**values)
    body = body[:1].upper() + body[1:]
    extras = _extras(pattern, slots)
    extra = extras[variant % len(extras)]
    lead = ""
    if ":" not in pattern.text:
        lead_index = (variant // len(extras)) % (len(LEADS) + 1)
        lead = LEADS[lead_index - 1] if lead_index else ""
    text = " ".join(
        x
        for x in (
            lead,
            body if not lead or pattern.text.startswith("{") else body[:1].lower() + body[1:],
            extra,
        )
        if x
    )
    if len(text) > MAX_REASON_CHARS:
        text = " ".join(x for x in (body, extra) if x)
    if len(text) > MAX_REASON_CHARS:
        text = body
    return text


def _candidates(
    item: Any, terms: Sequence[str], used_terms: set[str]
) -> list[tuple[Pattern, dict[str, str]]]:
    """(pattern, slots) options for one item, profile patterns first when a term matches."""
    options: list[tuple[Pattern, dict[str, str]]] = []
    fresh = [t for t in terms if normalize(t) not in used_terms] + [
        t for t in terms if normalize(t) in used_terms
    ]
    if fresh:
        for term in fresh[:3]:
            slots = item_slots(item, term)
            options.extend((p, slots) for p in PROFILE_PATTERNS if p.needs <= slots.keys())
    slots = item_slots(item, None)
    options.extend((p, slots) for p in FACT_PATTERNS if p.needs <= slots.keys())
    return options


def template_reasons(
    *,
    user_id: str | None,
    profile: Any | None,
    summary: str | None,
    items: Sequence[Any],
    taken: Sequence[str] = (),
) -> list[str]:
    """One grounded reason per item, distinct across the list (and from ``taken``)."""
    terms = profile_terms(profile, summary)
    avoid = dislike_stems(profile)
    reasons: list[str] = []
    used_patterns: set[str] = set()
    used_terms: set[str] = set()
    previous = list(taken)
    for item in items:
        asin = get_field(item, "parent_asin", "")
        options = _candidates(item, matched_terms(terms, item, avoid_stems=avoid), used_terms)
        n_profile = sum(1 for p, _ in options if "term" in p.needs)
        # Rotate within the profile block and the fact block separately, so a matching term is preferred.
        start_p = stable_index(user_id or "", asin, "p", modulo=n_profile) if n_profile else 0
        start_f = stable_index(user_id or "", asin, "f", modulo=len(options) - n_profile)
        order = [options[(start_p + i) % n_profile] for i in range(n_profile)] + [
            options[n_profile + (start_f + i) % (len(options) - n_profile)]
            for i in range(len(options) - n_profile)
        ]
        chosen = None
        for strict in (True, False):
            for pattern, slots in order:
                if strict and pattern.id in used_patterns:
                    continue
                variant = stable_index(user_id or "", asin, pattern.id, "v", modulo=1 << 30)
                text = render(pattern, slots, variant=variant)
                if not any(near_duplicate(text, prev) for prev in previous):
                    chosen = (pattern, slots, text)
                    break
            if chosen:
                break
        if chosen is None:  # every option collides (e.g. the same item twice): make it unique explicitly
            pattern, slots = order[0]
            chosen = (
                pattern,
                slots,
                f"{render(pattern, slots)[:-1]} (#{len(reasons) + 1}).",
            )  # never in practice
        pattern, slots, text = chosen
        used_patterns.add(pattern.id)
        if "term" in slots and "term" in pattern.needs:
            used_terms.add(normalize(slots["term"]))
        reasons.append(text)
        previous.append(text)
    return reasons


def near_duplicate_share(reasons: Sequence[str]) -> float:
    """Share of reasons in one list that repeat (exactly or nearly) an earlier one: 0 = all distinct.

    Not the study's AdDupRatio (exact repeats pooled over users: ``tools.evaluation.metrics.ad_dup_ratio``).
    """
    if len(reasons) < 2:
        return 0.0
    dups = sum(1 for i, r in enumerate(reasons) if any(near_duplicate(r, p) for p in reasons[:i]))
    return dups / len(reasons)


def fill_reasons(
    *,
    user_id: str | None,
    profile: Any | None,
    summary: str | None,
    items: Sequence[Any],
    given: Sequence[tuple[str, str] | None] | None = None,
    taken: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """One distinct ``(reason, source)`` per item: the one way every caller fills a list of reasons.

    ``given[i]`` is a reason already produced for ``items[i]`` (e.g. by the LLM) with its source; it is
    kept unless it repeats (nearly) an earlier kept reason or one of ``taken``. Every item left without
    a reason gets a grounded template reason, distinct from all the kept ones.
    """
    given = list(given) if given is not None else [None] * len(items)
    if len(given) != len(items):
        raise ValueError(f"{len(given)} given reasons for {len(items)} items")
    kept: list[str] = list(taken)
    out: list[tuple[str, str] | None] = [None] * len(items)
    for i, g in enumerate(given):
        if g is not None and g[0] and not any(near_duplicate(g[0], k) for k in kept):
            out[i] = g
            kept.append(g[0])
    missing = [i for i, o in enumerate(out) if o is None]
    texts = template_reasons(
        user_id=user_id, profile=profile, summary=summary, items=[items[i] for i in missing], taken=kept
    )
    for i, text in zip(missing, texts, strict=True):
        out[i] = (text, "template")
    return [o for o in out if o is not None]
