"""ALS at All_Beauty scale: Spark fit vs the `implicit` library, and the full training pipeline.

    .venv/bin/python bench/als.py [--users 632000 --items 112000 --ratings 701000] [--db URL]

Generates ratings shaped like Amazon Reviews 2023 All_Beauty (632k users, 112k items, 701k
ratings; most users rate once, item popularity is a power law, ratings skew to 5 stars), then prints:
  1. Spark ALS fit time (rank 10, 10 iterations; explicit residual model and implicit) next to
     implicit's AlternatingLeastSquares on the same matrix, as ratios;
  2. the full pipeline: load (Parquet), fit (biases + Spark ALS), top-N for every user, write
     (factors + one top-N row per user into the database: SQLite under a temp dir unless --db is
     given).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

SPARK_IMPLICIT = "spark ALS implicit (implicitPrefs=True)"
IMPLICIT_LIB = "implicit library ALS (same confidences)"
ALL_BEAUTY_RATING_P = [0.13, 0.07, 0.09, 0.13, 0.58]  # 1..5 stars


def generate(*, users: int, items: int, ratings: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Every user rates once; the extra ratings go to a power-law set of heavy users.
    extra = max(0, ratings - users)
    heavy = rng.zipf(1.6, size=extra) % users
    u = np.concatenate([np.arange(users), heavy])
    # Item popularity: a power law over a permuted catalogue (every item rated at least once).
    weights = 1.0 / np.arange(1, items + 1) ** 0.85
    weights /= weights.sum()
    perm = rng.permutation(items)
    i = np.concatenate(
        [np.arange(min(items, len(u))), perm[rng.choice(items, size=max(0, len(u) - items), p=weights)]]
    )
    rng.shuffle(i)
    quality = rng.normal(0, 0.8, size=items)
    base = rng.choice(5, size=len(u), p=ALL_BEAUTY_RATING_P) + 1
    r = np.clip(np.rint(base + 0.5 * quality[i]), 1, 5).astype(np.float32)
    ts = 1_400_000_000_000 + rng.integers(0, 8 * 365 * 86_400_000, size=len(u))
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(u).map("U{:07d}".format),
            "parent_asin": pd.Series(i).map("B{:09d}".format),
            "rating": r,
            "timestamp": ts,
        }
    )
    return frame.drop_duplicates(["user_id", "parent_asin"]).reset_index(drop=True)


def timed(label: str, results: dict[str, float]):  # noqa: ANN201 - tiny context manager
    class _T:
        def __enter__(self) -> None:
            self.t = time.perf_counter()

        def __exit__(self, *_: object) -> None:
            results[label] = time.perf_counter() - self.t
            print(f"  {label:<42} {results[label]:8.1f} s", flush=True)

    return _T()


def compare(frame: pd.DataFrame, *, spark: object, params: object, t: dict[str, float], top_n: int) -> None:
    """Spark implicit ALS vs implicit's AlternatingLeastSquares on the same confidence matrix."""
    from implicit.cpu.als import AlternatingLeastSquares

    from services.als.model import fit

    print("1. fit time, rank 10, 10 iterations, same matrix")
    with timed(SPARK_IMPLICIT, t):
        fit(frame, params=params, spark=spark)
    u, _ = pd.factorize(frame["user_id"])
    i, _ = pd.factorize(frame["parent_asin"])
    matrix = sparse.csr_matrix((frame["rating"].to_numpy() / 5.0 * 10.0, (u, i)), dtype=np.float32)
    lib = AlternatingLeastSquares(
        factors=10,
        iterations=10,
        regularization=0.1,
        random_state=0,
        num_threads=os.cpu_count() or 1,
        calculate_training_loss=False,
    )
    with timed(IMPLICIT_LIB, t):
        lib.fit(matrix, show_progress=False)
    print(f"  ratio spark/implicit-lib: {t[SPARK_IMPLICIT] / t[IMPLICIT_LIB]:.1f}x")
    if top_n:
        with timed("implicit library top-N for all users", t):
            lib.recommend(np.arange(matrix.shape[0]), matrix, N=top_n, filter_already_liked_items=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=632_000)
    parser.add_argument("--items", type=int, default=112_000)
    parser.add_argument("--ratings", type=int, default=701_000)
    parser.add_argument("--top-n", type=int, default=50)
    parser.add_argument("--db", default="", help="SQLAlchemy URL (default: SQLite in a temp dir)")
    parser.add_argument("--skip-comparison", action="store_true", help="only the full pipeline (part 2)")
    parser.add_argument("--implicit-lib-top-n", action="store_true", help="also time implicit's top-N")
    args = parser.parse_args()

    from services.als import store
    from services.als.config import AlsSettings
    from services.als.data import clean_ratings, load_ratings
    from services.als.model import AlsParams, fit
    from services.als.spark import get_spark
    from shared.db import upgrade_database

    tmp = Path(tempfile.mkdtemp(prefix="als-bench-"))
    print(f"ALS bench: {os.cpu_count()} CPU cores, work dir {tmp}")
    frame = clean_ratings(generate(users=args.users, items=args.items, ratings=args.ratings))
    parquet = tmp / "ratings.parquet"
    frame.to_parquet(parquet, index=False)
    print(
        f"data: {frame['user_id'].nunique():,} users, {frame['parent_asin'].nunique():,} items, "
        f"{len(frame):,} ratings, mean rating {frame['rating'].mean():.2f}"
    )

    db = args.db or f"sqlite:///{tmp / 'bench.db'}"
    settings = AlsSettings(
        HOME=tmp,
        DATABASE_URL=db,
        ALS_RATINGS_PARQUET=str(parquet),
        SPARK_MASTER="local[*]",
        SPARK_DRIVER_MEMORY="6g",
        SPARK_SHUFFLE_PARTITIONS=4,
    )
    upgrade_database(db)
    t: dict[str, float] = {}
    with timed("spark session start", t):
        spark = get_spark(settings)

    explicit = AlsParams(rank=10, maxIter=10, regParam=0.1)
    implicit_params = AlsParams(rank=10, maxIter=10, regParam=0.1, implicit=True, alpha=10.0)

    if not args.skip_comparison:
        compare(
            frame,
            spark=spark,
            params=implicit_params,
            t=t,
            top_n=args.top_n if args.implicit_lib_top_n else 0,
        )

    print("2. full pipeline (explicit bias + residual model, as served)")
    with timed("load ratings (Parquet)", t):
        ratings = load_ratings(settings)
    with timed("fit: biases + spark ALS on residuals", t):
        model = fit(ratings, params=explicit, spark=spark)
    print(f"    of which spark ALS {model.timings['spark_als_s']:.1f} s")
    version = store.create_version(db, kind="explicit", params=explicit.to_dict(), run_id="bench")
    with timed("write factors", t):
        store.write_factors(db, version=version, model=model)
    with timed(f"top-{args.top_n} for all users + write", t):
        n = store.write_top_n(db, version=version, model=model, n=args.top_n)
    total = sum(
        t[k]
        for k in (
            "load ratings (Parquet)",
            "fit: biases + spark ALS on residuals",
            "write factors",
            f"top-{args.top_n} for all users + write",
        )
    )
    print(f"  top-{args.top_n} lists written for {n:,} of {model.n_users:,} users (one row per user)")
    print(
        f"  spark ALS explicit ratio vs implicit lib: "
        f"{model.timings['spark_als_s'] / t.get(IMPLICIT_LIB, float('nan')):.1f}x"
    )
    print(f"  FULL PIPELINE (load, fit, top-N all users, write): {total:.1f} s  (target < 120 s)")


if __name__ == "__main__":
    main()
