"""Hand-built interaction logs for the source tests."""
from __future__ import annotations

from tools.evaluation.split import Interaction

DAY = 86_400_000
T0 = 1_600_000_000_000


def log(sequences: dict[str, list[str]], *, rating: float = 5.0, same_day: bool = False) -> list[Interaction]:
    """One interaction per item of each user's sequence, a day apart (or all on one day)."""
    out = []
    for user, items in sequences.items():
        for n, asin in enumerate(items):
            out.append(Interaction(user_id=user, parent_asin=asin, rating=rating,
                                   timestamp=T0 + (0 if same_day else n * DAY)))
    return out
