"""Ratings in, splits out: the inputs of every ALS fit (pandas on the driver; no Spark here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import select

from services.als.config import AlsSettings
from shared.db import get_engine
from shared.models import Review

COLUMNS = ["user_id", "parent_asin", "rating", "timestamp"]


def read_reviews(settings: AlsSettings) -> pd.DataFrame:
    """Every review as ``DataFrame[user_id, parent_asin, rating, timestamp]``, as stored (repeats kept).

    Reads ``ALS_RATINGS_PARQUET`` when set (large exports), else the ``reviews`` table.
    """
    if settings.ALS_RATINGS_PARQUET:
        return pd.read_parquet(settings.ALS_RATINGS_PARQUET, columns=COLUMNS)
    query = select(Review.user_id, Review.parent_asin, Review.rating, Review.timestamp)
    with get_engine(settings.database_url).connect() as conn:
        return pd.read_sql(query, conn)


def load_ratings(settings: AlsSettings) -> pd.DataFrame:
    """All ratings as ``DataFrame[user_id, parent_asin, rating, timestamp]`` (one row per user-item pair)."""
    return clean_ratings(read_reviews(settings))


def clean_ratings(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed columns, no missing values, the latest rating when a user rated an item more than once."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"ratings lack columns {missing}")
    out = frame[COLUMNS].dropna().copy()
    out["user_id"] = out["user_id"].astype(str)
    out["parent_asin"] = out["parent_asin"].astype(str)
    out["rating"] = out["rating"].astype(np.float32)
    out["timestamp"] = out["timestamp"].astype(np.int64)
    out = out.sort_values(["user_id", "timestamp", "parent_asin"], kind="stable")
    out = out.drop_duplicates(["user_id", "parent_asin"], keep="last")
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    kind: str

    def describe(self) -> dict[str, int | str]:
        return {
            "split": self.kind,
            "train": len(self.train),
            "test": len(self.test),
            "test_users": int(self.test["user_id"].nunique()),
        }


def leave_last_out(ratings: pd.DataFrame) -> Split:
    """Each user's newest rating is held out, for users with at least two (the others train only)."""
    ordered = ratings.sort_values(["user_id", "timestamp", "parent_asin"], kind="stable")
    counts = ordered.groupby("user_id", sort=False)["user_id"].transform("size")
    is_last = ~ordered.duplicated("user_id", keep="last")
    test_mask = is_last & (counts >= 2)
    return Split(
        train=ordered[~test_mask].reset_index(drop=True),
        test=ordered[test_mask].reset_index(drop=True),
        kind="leave-last-out",
    )


def global_time(ratings: pd.DataFrame, *, test_fraction: float = 0.1) -> Split:
    """Everything after one cut-off time is held out (the realistic 'train on the past' split)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    cutoff = int(np.quantile(ratings["timestamp"].to_numpy(), 1.0 - test_fraction))
    test_mask = ratings["timestamp"] > cutoff
    return Split(
        train=ratings[~test_mask].reset_index(drop=True),
        test=ratings[test_mask].reset_index(drop=True),
        kind="global-time",
    )


def make_split(ratings: pd.DataFrame, *, kind: str, test_fraction: float = 0.1) -> Split:
    if kind == "leave-last-out":
        return leave_last_out(ratings)
    if kind == "global-time":
        return global_time(ratings, test_fraction=test_fraction)
    raise ValueError(f"unknown split {kind!r} (leave-last-out | global-time)")
