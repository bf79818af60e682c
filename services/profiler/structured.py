"""The structured profile (four lists of short terms) and what makes one acceptable.

Grounding: a term is kept only if every content word of it (stemmed by ``shared.text``) occurs in the
user's (sanitised) reviews / item titles or in the domain vocabulary, so invented terms are dropped.
Products and potential interests must be grounded in the reviewed items' own titles or the catalog
vocabulary (a product is something the catalog sells, not a word a review planted). A term with
markup, a link, an instruction-like phrase or a repeated word (``shared.text.unsafe_term``) is dropped
whatever its grounding. This is the one validation step every profile passes through (LLM, extractive,
any backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from services.profiler.prompts import FIELDS
from shared.text import content_stems, unsafe_term


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


ITEM_GROUNDED = frozenset({"preferred_products", "potential_interests"})


def ground(
    profile: StructuredProfile, *, evidence: str, vocab: Sequence[str], item_evidence: str | None = None
) -> tuple[StructuredProfile, list[str]]:
    """Keep the safe terms whose every content word occurs in the evidence or the vocabulary.

    ``item_evidence`` (the reviewed items' own text): when given, products and potential interests
    must be grounded in it or in the vocabulary, not in the review text.
    """
    vocab_stems = {s for v in vocab for s in content_stems(v)}
    allowed = set(content_stems(evidence)) | vocab_stems
    item_allowed = allowed if item_evidence is None else set(content_stems(item_evidence)) | vocab_stems
    grounded = StructuredProfile()
    dropped: list[str] = []
    for name in FIELDS:
        kept = []
        pool = item_allowed if name in ITEM_GROUNDED else allowed
        for term in getattr(profile, name):
            stems = content_stems(term)
            if stems and not unsafe_term(term) and all(s in pool for s in stems):
                kept.append(term)
            else:
                dropped.append(term)
        setattr(grounded, name, kept)
    return grounded, dropped


def usable_profile(profile: StructuredProfile) -> bool:
    return bool(profile.preferred_products or profile.liked_features) and len(profile.terms()) >= 2
