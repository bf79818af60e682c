"""What every strategy and metric of one evaluation run shares: split, catalogue, models, profiles."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from shared.config import CommonSettings
from shared.logging import get_logger
from tools.evaluation.data import OfflineCatalog
from tools.evaluation.split import Split

if TYPE_CHECKING:
    from shared.embeddings import Encoder

log = get_logger(__name__)
S = TypeVar("S", bound=CommonSettings)


@dataclass
class UserProfile:
    """A user's profile as the evaluation sees it (built by the profiler's library code).

    ``terms`` are all profile phrases (specificity), ``positive_terms`` all but the dislikes
    (grounding: a reason that cites a dislike is not grounded); ``vector`` is the embedding of
    ``text`` that AvgCosSim compares with the recommended items. ``cold`` = no usable profile.
    """

    user_id: str
    cold: bool
    terms: list[str] = field(default_factory=list)
    positive_terms: list[str] = field(default_factory=list)
    structured: dict[str, list[str]] | None = None
    summary: str | None = None
    text: str = ""
    source: str = ""
    vector: np.ndarray | None = None


@dataclass
class EvalContext:
    split: Split
    catalog: OfflineCatalog
    k: int
    seed: int
    settings: CommonSettings
    show_progress: bool = True
    profiles: dict[str, UserProfile] = field(default_factory=dict)
    # Seconds per user spent building profiles (charged to the strategies that use them).
    profile_seconds_per_user: dict[str, float] = field(default_factory=dict)
    vocab: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

    def service_settings(self, cls: type[S], **updates: Any) -> S:
        """A service's settings for this run: the run's common settings, the service's own fields from
        the environment and defaults, then ``updates``. The one place the evaluation builds them."""
        return cls(**{**self.settings.model_dump(), **updates})

    @cached_property
    def encoder(self) -> Encoder:
        """The services' text encoder (``settings.EMBEDDING_MODEL``); raises when it cannot load."""
        from shared.embeddings import get_encoder

        return get_encoder(self.settings.EMBEDDING_MODEL, self.settings.DEVICE)

    def ensure_item_vectors(self) -> None:
        """Embed the catalogue once (item_text: title + features + description + details + category)."""
        if self.catalog.has_vectors:
            return
        texts = [self.catalog.text(a) or a for a in self.catalog.asins]
        self.catalog.set_vectors(self.encoder.encode(texts, show_progress=self.show_progress))

    @cached_property
    def item_popularity(self) -> dict[str, int]:
        """Distinct training users per item (novelty's p(i) numerator)."""
        return dict(Counter(a for _, a in {(i.user_id, i.parent_asin) for i in self.split.train}))

    @cached_property
    def n_train_users(self) -> int:
        return len({i.user_id for i in self.split.train})

    def seen(self, user_id: str) -> set[str]:
        return {i.parent_asin for i in self.split.history(user_id)}
