"""Small ratings with planted tastes (for ALS tests): users love one or two of a few item categories.

Users mostly rate items of the categories they love (so ranking can beat popularity) and rate
loved categories high and others low on top of user/item biases (so factors beat the biases).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def planted_ratings(
    *,
    users: int = 300,
    items: int = 200,
    categories: int = 8,
    per_user: tuple[int, int] = (4, 14),
    seed: int = 7,
    prefix: str = "",
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    item_cat = rng.integers(0, categories, size=items)
    item_quality = rng.normal(0.0, 0.4, size=items)
    popularity = rng.pareto(1.5, size=items) + 1.0  # power-law exposure
    user_bias = rng.normal(0.0, 0.35, size=users)
    rows = []
    for u in range(users):
        loved = set(rng.choice(categories, size=rng.integers(1, 3), replace=False).tolist())
        n = int(rng.integers(*per_user))
        in_taste = np.isin(item_cat, list(loved))
        weights = popularity * np.where(in_taste, 8.0, 1.0)
        chosen = rng.choice(items, size=min(n, items), replace=False, p=weights / weights.sum())
        t0 = 1_600_000_000_000 + int(rng.integers(0, 10**9))
        for step, i in enumerate(chosen):
            affinity = 1.0 if item_cat[i] in loved else -1.0
            r = 3.4 + user_bias[u] + item_quality[i] + 0.9 * affinity + rng.normal(0.0, 0.35)
            rows.append(
                (
                    f"{prefix}U{u:04d}",
                    f"{prefix}I{i:04d}",
                    float(np.clip(np.rint(r), 1, 5)),
                    t0 + step * 86_400_000,
                )
            )
    return pd.DataFrame(rows, columns=["user_id", "parent_asin", "rating", "timestamp"])
