"""Held-out splits of a review log: leave-last-out per user (default) and global time.

Both are deterministic: reviews are ordered by ``(timestamp, parent_asin, rating)`` per user, so
the same input gives the same split whatever the file order.

Leave-last-out
    Per user, the last review is the test item and the one before it the validation item. A user
    with one review is cold start for the test: that review is the test item and they have no
    history. Validation is only taken from users with >= 3 reviews, so that every validation user
    keeps a training history. Models are tuned on ``tune_train`` -> ``validation`` and then refit on
    ``train`` (everything but the test reviews) for the test.

Global time
    One cut-off for everybody at the ``test_fraction`` quantile of timestamps: earlier reviews are
    ``train``, later ones the test set (every later review of a user is relevant: the multi-item
    forms of the ranking metrics apply). A user with test reviews and no earlier review is cold.
    Validation repeats the same cut inside ``train``. No future leaks into the past, unlike
    leave-last-out, which is why it is offered.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("leave-last-out", "global-time")


@dataclass(frozen=True, slots=True)
class Interaction:
    """One review reduced to what the evaluation needs."""

    user_id: str
    parent_asin: str
    rating: float
    timestamp: int
    title: str = ""
    text: str = ""

    @classmethod
    def from_review(cls, review: Any) -> Interaction:
        return cls(user_id=review.user_id, parent_asin=review.parent_asin, rating=float(review.rating),
                    timestamp=int(review.timestamp), title=review.title or "", text=review.text or "")


def _order(i: Interaction) -> tuple[int, str, float]:
    return (i.timestamp, i.parent_asin, i.rating)


@dataclass
class Split:
    """A split: what models may see (``train``), what they are scored on (``test``), and the
    validation pair (``tune_train`` -> ``validation``) for hyper-parameter choice."""

    name: str
    train: list[Interaction]
    test: dict[str, list[Interaction]]
    tune_train: list[Interaction]
    validation: dict[str, list[Interaction]]
    _history: dict[str, list[Interaction]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        hist: dict[str, list[Interaction]] = defaultdict(list)
        for i in self.train:
            hist[i.user_id].append(i)
        self._history = {u: sorted(v, key=_order) for u, v in hist.items()}

    def history(self, user_id: str) -> list[Interaction]:
        """The user's training reviews, oldest first (empty for a cold user)."""
        return self._history.get(user_id, [])

    @property
    def test_users(self) -> list[str]:
        return sorted(self.test)

    def is_cold(self, user_id: str) -> bool:
        """No training history: nothing personal to recommend from."""
        return not self._history.get(user_id)

    @property
    def cold_users(self) -> set[str]:
        return {u for u in self.test if self.is_cold(u)}


def _dedupe(interactions: Iterable[Interaction]) -> list[Interaction]:
    """Keep one review per identity (user, item, timestamp): replays are not extra evidence."""
    seen: dict[tuple[str, str, int], Interaction] = {}
    for i in interactions:
        seen.setdefault((i.user_id, i.parent_asin, i.timestamp), i)
    return list(seen.values())


def leave_last_out(interactions: Iterable[Interaction]) -> Split:
    """Per user: last review -> test, second last -> validation (users with >= 3 reviews)."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for i in _dedupe(interactions):
        by_user[i.user_id].append(i)
    train: list[Interaction] = []
    tune_train: list[Interaction] = []
    test: dict[str, list[Interaction]] = {}
    validation: dict[str, list[Interaction]] = {}
    for user in sorted(by_user):
        seq = sorted(by_user[user], key=_order)
        test[user] = [seq[-1]]
        train.extend(seq[:-1])
        if len(seq) >= 3:
            validation[user] = [seq[-2]]
            tune_train.extend(seq[:-2])
        else:
            tune_train.extend(seq[:-1])
    return Split("leave-last-out", train=train, test=test, tune_train=tune_train, validation=validation)


def _time_cut(interactions: list[Interaction], test_fraction: float,
              ) -> tuple[list[Interaction], dict[str, list[Interaction]]]:
    if not interactions:
        return [], {}
    stamps = sorted(i.timestamp for i in interactions)
    # The cut-off is the first timestamp of the newest ``test_fraction``; ties go to the test side.
    idx = min(len(stamps) - 1, max(0, int(round(len(stamps) * (1.0 - test_fraction)))))
    cut = stamps[idx]
    before = sorted((i for i in interactions if i.timestamp < cut), key=lambda i: (i.user_id, *_order(i)))
    after: dict[str, list[Interaction]] = defaultdict(list)
    for i in sorted(interactions, key=lambda i: (i.user_id, *_order(i))):
        if i.timestamp >= cut:
            after[i.user_id].append(i)
    return before, dict(after)


def global_time(interactions: Iterable[Interaction], *, test_fraction: float = 0.2) -> Split:
    """One global cut-off at the ``1 - test_fraction`` timestamp quantile; validation likewise in train."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    items = _dedupe(interactions)
    train, test = _time_cut(items, test_fraction)
    tune_train, validation = _time_cut(train, test_fraction)
    return Split("global-time", train=train, test=test, tune_train=tune_train, validation=validation)


def make_split(interactions: Iterable[Interaction], *, kind: str = "leave-last-out",
               test_fraction: float = 0.2) -> Split:
    """Build the named split (see :data:`SPLITS`)."""
    if kind == "leave-last-out":
        return leave_last_out(interactions)
    if kind == "global-time":
        return global_time(interactions, test_fraction=test_fraction)
    raise ValueError(f"unknown split {kind!r}; choose from {', '.join(SPLITS)}")
