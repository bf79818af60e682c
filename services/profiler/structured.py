"""The structured profile (four lists of short terms) and what makes one acceptable.

Grounding: a term is kept only if every content word of it (stemmed by ``shared.text``) occurs in the
user's reviews / item titles or in the domain vocabulary, so invented terms are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from services.profiler.prompts import FIELDS
from shared.text import content_stems


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
