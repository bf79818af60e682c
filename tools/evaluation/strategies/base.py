"""One offline interface over every recommendation strategy.

A strategy is fitted once on the split's training part, then asked for the top-k of a batch of
test users (batches let embedding and LLM work run vectorized). It returns one
:class:`UserRecs` per user with its items, optional reasons and rating predictions, whether it
served the user as cold start, and the seconds each stage took (per user).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.evaluation.context import EvalContext


class StrategyUnavailable(RuntimeError):
    """A strategy cannot run here (its library code or model is missing); reported, never faked."""


@dataclass
class UserRecs:
    """One user's top-k from one strategy."""

    user_id: str
    items: list[str]
    scores: list[float]
    cold: bool
    reasons: list[str | None] | None = None
    # (predicted, actual) rating pairs for the user's held-out items that the model can score.
    rating_pairs: list[tuple[float, float]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def rank(scores: dict[str, float], k: int, *, exclude: set[str] | None = None) -> list[tuple[str, float]]:
    """Top-k ``(asin, score)`` by score descending, ties broken by ``parent_asin`` (deterministic)."""
    exclude = exclude or set()
    ordered = sorted(((a, s) for a, s in scores.items() if a not in exclude), key=lambda t: (-t[1], t[0]))
    return ordered[:k]


class StageClock:
    """Accumulates seconds per stage; ``per_user(n)`` spreads batch stages over the batch."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def per_user(self, n: int) -> dict[str, float]:
        return {k: v / max(1, n) for k, v in self.seconds.items()}


class OfflineStrategy(ABC):
    """Base class: ``name``, ``fit`` once, ``recommend`` per batch of users."""

    name: str = ""
    #: True when the strategy predicts star ratings (RMSE/MAE apply).
    predicts_ratings: bool = False
    #: True when the strategy personalizes (cold-start ratio applies).
    personalized: bool = True
    #: Explainer backend for the reasons the strategy does not write itself ("template" | "auto").
    explain_default: str = "template"
    #: Needs the per-user profiles / the offline retriever (built once per run, shared).
    uses_profiles: bool = False
    uses_retriever: bool = False
    #: Users per ``recommend`` call.
    batch_size: int = 64

    @abstractmethod
    def fit(self, ctx: EvalContext) -> None:
        """Train or index on ``ctx.split.train`` (the evaluation times this call)."""

    @abstractmethod
    def recommend(self, ctx: EvalContext, user_ids: Sequence[str]) -> list[UserRecs]:
        """The top ``ctx.k`` for each user, excluding items already in the user's history."""

    def describe(self) -> dict[str, Any]:
        """Parameters worth recording in the report (chosen hyper-parameters, models)."""
        return {}
