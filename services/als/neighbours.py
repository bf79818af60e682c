"""Per-item neighbour lists in Spark: co-review cosine and "reviewed next / before" transitions.

What grows with the data is counted here, in the training job (``local[*]`` embedded, a cluster in
production), not in the retriever: the co-review counts are a self-join of the reviews on the user
(``sum_u |I_u|^2`` pairs), the transitions a window over each user's time-ordered reviews. The
results are the SAME numbers as the retriever's in-process sources compute on the same reviews
(``services.retriever.sources.coreview`` / ``transitions``; the tests compare them bit for bit):

* ``coreview``: ``|U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` over the binary user x item matrix, the best
  ``top`` per item, ties broken by the lower ``parent_asin``. The product is taken in the order
  scipy takes it (``co * (1/sqrt(n_i)) * (1/sqrt(n_j))``), so the doubles agree exactly.
* ``forward.w<W>`` / ``backward.w<W>``: each user's reviews ordered by (timestamp, parent_asin,
  rating), as ``services.retriever.sources.base.order_key`` orders them; every pair up to ``W`` steps
  apart counts ``1 / steps`` (a repeat of the same item is no transition); each item's row is
  normalised into P(next | item) and P(before | item). ``transitions_top`` = 0 keeps every
  transition: a row holds at most ``2 W`` entries per review of the item, so the total grows
  linearly with the data, and a truncated list would serve a matrix the validation folds never saw.

Input: the reviews as the training job loads them *before* the one-rating-per-pair clean-up (the
retriever's sources read every review, repeats included); the lists are collected on the driver and
written by :func:`services.als.store.write_neighbours` under the model version.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shared.neighbours import COREVIEW, NeighbourList, backward_kind, forward_kind, interactions_fingerprint

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

COLUMNS = ["user_id", "parent_asin", "rating", "timestamp"]
DEFAULT_TOP = 100
DEFAULT_WINDOWS = (1, 2)  # the retriever's ``transitions`` (window 1) and ``transitions_wide`` (window 2)


@dataclass
class NeighbourLists:
    """``lists[kind][parent_asin]`` (every item of the data, empty lists included) and what describes
    them (stored in the version's ``metrics["neighbours"]``)."""

    lists: dict[str, dict[str, NeighbourList]]
    meta: dict[str, Any]


def interactions_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed ``user_id, parent_asin, rating, timestamp`` rows without missing values, repeats kept."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"interactions lack columns {missing}")
    out = frame[COLUMNS].dropna().copy()
    out["user_id"] = out["user_id"].astype(str)
    out["parent_asin"] = out["parent_asin"].astype(str)
    out["rating"] = out["rating"].astype(np.float64)
    out["timestamp"] = out["timestamp"].astype(np.int64)
    return out.reset_index(drop=True)


def reviews_fingerprint(frame: pd.DataFrame) -> str:
    """The data fingerprint of these reviews (``shared.neighbours.interactions_fingerprint``)."""
    frame = interactions_frame(frame)
    return interactions_fingerprint(zip(frame["user_id"], frame["parent_asin"], frame["timestamp"], strict=True))


def compute_neighbours(
    interactions: pd.DataFrame,
    *,
    spark: SparkSession,
    top: int = DEFAULT_TOP,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    transitions_top: int = 0,
) -> NeighbourLists:
    """Co-review neighbours (``top`` per item) and forward / backward transitions per window."""
    t0 = time.perf_counter()
    frame = interactions_frame(interactions)
    universe = sorted(set(frame["parent_asin"]))
    df = spark.createDataFrame(frame, schema="user_id string, parent_asin string, rating double, timestamp long")
    df = df.cache()
    try:
        parts = [(COREVIEW, coreview_pairs(df, top=top))]
        for w in sorted({int(w) for w in windows}):
            fwd, bwd = transition_pairs(df, window=w, top=transitions_top)
            parts += [(forward_kind(w), fwd), (backward_kind(w), bwd)]
        lists = _collect(parts, universe)  # one Spark job for every kind
    finally:
        df.unpersist()
    meta = {
        "fingerprint": reviews_fingerprint(frame),
        "interactions": len(frame),
        "items": len(universe),
        "top": int(top),
        "transitions_top": int(transitions_top),
        "windows": sorted({int(w) for w in windows}),
        "items_with_neighbours": {k: sum(1 for v in rows.values() if v) for k, rows in lists.items()},
        "pairs": {k: sum(len(v) for v in rows.values()) for k, rows in lists.items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return NeighbourLists(lists=lists, meta=meta)


def coreview_pairs(df: DataFrame, *, top: int) -> DataFrame:
    """``(item, other, score)``: the cosine of the reviewer sets, the best ``top`` per item."""
    from pyspark.sql import functions as F

    ui = df.select("user_id", "parent_asin").distinct()  # binary: a repeated review is one co-review
    inv = ui.groupBy("parent_asin").agg((F.lit(1.0) / F.sqrt(F.count(F.lit(1)).cast("double"))).alias("inv"))
    a = ui.select("user_id", F.col("parent_asin").alias("item"))
    b = ui.select("user_id", F.col("parent_asin").alias("other"))
    co = (a.join(b, "user_id").where(F.col("item") != F.col("other"))
          .groupBy("item", "other").agg(F.count(F.lit(1)).cast("double").alias("co")))
    scored = (co.join(inv.select(F.col("parent_asin").alias("item"), F.col("inv").alias("inv_i")), "item")
              .join(inv.select(F.col("parent_asin").alias("other"), F.col("inv").alias("inv_j")), "other")
              .select("item", "other", ((F.col("co") * F.col("inv_i")) * F.col("inv_j")).alias("score")))
    return _top(scored, top)


def transition_pairs(df: DataFrame, *, window: int, top: int = 0) -> tuple[DataFrame, DataFrame]:
    """(forward, backward) ``(item, other, score)``: P(next = other | item), P(before = other | item)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if window < 1:
        raise ValueError("window must be at least 1")
    order = Window.partitionBy("user_id").orderBy("timestamp", "parent_asin", "rating")
    seq = df.select(F.col("parent_asin").alias("item"),
                    *[F.lead("parent_asin", s).over(order).alias(f"next{s}") for s in range(1, window + 1)])
    steps = None
    for s in range(1, window + 1):
        part = (seq.select("item", F.col(f"next{s}").alias("other"), F.lit(1.0 / s).alias("weight"))
                .where(F.col("other").isNotNull() & (F.col("item") != F.col("other"))))
        steps = part if steps is None else steps.unionAll(part)
    assert steps is not None
    counts = steps.groupBy("item", "other").agg(F.sum("weight").alias("count"))
    out_total = counts.groupBy("item").agg((F.lit(1.0) / F.sum("count")).alias("inv"))
    in_total = counts.groupBy("other").agg((F.lit(1.0) / F.sum("count")).alias("inv"))
    forward = counts.join(out_total, "item").select("item", "other", (F.col("count") * F.col("inv")).alias("score"))
    backward = counts.join(in_total, "other").select(F.col("other").alias("item"), F.col("item").alias("other"),
                                                     (F.col("count") * F.col("inv")).alias("score"))
    return _top(forward, top), _top(backward, top)


def _top(scored: DataFrame, n: int) -> DataFrame:
    """Each item's ``n`` best (score descending, the lower asin first on ties); ``n <= 0``: all."""
    if n <= 0:
        return scored
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("item").orderBy(F.col("score").desc(), F.col("other").asc())
    return scored.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n).drop("rank")


def _collect(parts: Sequence[tuple[str, DataFrame]], universe: Sequence[str]) -> dict[str, dict[str, NeighbourList]]:
    """Every kind's pairs as per-item lists, best first (ties by asin), with an empty list for every
    other item of the data."""
    from functools import reduce

    from pyspark.sql import functions as F

    tagged = [pairs.select(F.lit(kind).alias("kind"), "item", "other", "score") for kind, pairs in parts]
    frame = pd.DataFrame(reduce(lambda a, b: a.unionByName(b), tagged).toPandas())
    out: dict[str, dict[str, NeighbourList]] = {kind: {a: [] for a in universe} for kind, _ in parts}
    if frame.empty:
        return out
    frame = frame.sort_values(["kind", "item", "score", "other"], ascending=[True, True, False, True], kind="stable")
    for kind, item, other, score in zip(frame["kind"], frame["item"], frame["other"], frame["score"], strict=True):
        out[str(kind)][str(item)].append((str(other), float(score)))
    return out
