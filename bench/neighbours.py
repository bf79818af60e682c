"""Neighbour lists in Spark vs in-process: time, size and equality on one reviews file.

    .venv/bin/python bench/neighbours.py                                   # Gift Cards from ../shared/data
    .venv/bin/python bench/neighbours.py --reviews ../shared/data/amazon-2014-toys-5core-sequences/reviews.jsonl.gz

Computes every item's co-review neighbours (top 100) and window-1 / window-2 transitions twice: with
the retriever's in-process sources (scipy, one process) and with the training job's Spark job
(``services.als.neighbours``, ``--master``, local[*] by default), checks that the lists are identical,
and times what the retriever then does with stored lists (building the matrices from them). Reported:
interactions, items, pairs per kind, seconds of each step. Spark's figure includes its job overheads
(a second or so per stage locally); its point is that the self-join scales out on a cluster, where the
in-process count is bounded by one process's memory and cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ROOT, machine_description  # noqa: E402

from services.als.config import AlsSettings  # noqa: E402
from services.als.neighbours import compute_neighbours  # noqa: E402
from services.als.spark import get_spark, stop_spark  # noqa: E402
from services.retriever.sources import CoReviewSource, TransitionSource  # noqa: E402
from shared.amazon import iter_jsonl  # noqa: E402
from shared.neighbours import COREVIEW, backward_kind, forward_kind  # noqa: E402

GIFT_CARDS = ROOT.parent / "shared" / "data" / "amazon-2018-gift-cards-5core" / "reviews.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reviews", type=Path, default=GIFT_CARDS)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--top", type=int, default=100)
    args = ap.parse_args()
    if not args.reviews.exists():
        print(f"no reviews at {args.reviews}: not measured")
        return 0
    rows = [(o["user_id"], o["parent_asin"], float(o.get("rating", 0.0)), int(o["timestamp"]))
            for _, o, err in iter_jsonl(args.reviews) if err is None and o is not None]
    frame = pd.DataFrame(rows, columns=["user_id", "parent_asin", "rating", "timestamp"])
    records = [SimpleNamespace(user_id=u, parent_asin=a, rating=r, timestamp=t) for u, a, r, t in rows]
    print(machine_description())
    print(f"data: {args.reviews.name} ({len(frame)} interactions, {frame['parent_asin'].nunique()} items)")

    t = time.perf_counter()
    co = CoReviewSource(neighbours=args.top)
    co.fit(interactions=records)
    expected = {COREVIEW: co.as_lists()}
    for w in (1, 2):
        tr = TransitionSource(window=w)
        tr.fit(interactions=records)
        expected[forward_kind(w)], expected[backward_kind(w)] = tr.as_lists()
    python_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as home:
        settings = AlsSettings(HOME=Path(home), SPARK_MASTER=args.master, SPARK_SHUFFLE_PARTITIONS=8)
        t = time.perf_counter()
        spark = get_spark(settings)
        start_s = time.perf_counter() - t
        compute_neighbours(frame.head(200), spark=spark, top=args.top)  # warm-up: JIT, first stages
        t = time.perf_counter()
        result = compute_neighbours(frame, spark=spark, top=args.top)
        spark_s = time.perf_counter() - t
        stop_spark()

    same = all(result.lists[k] == v for k, v in expected.items())
    t = time.perf_counter()
    CoReviewSource.from_lists(result.lists[COREVIEW], neighbours=args.top)
    for w in (1, 2):
        TransitionSource.from_lists(forward=result.lists[forward_kind(w)], backward=result.lists[backward_kind(w)],
                                    window=w)
    build_s = time.perf_counter() - t

    print("| step | seconds |")
    print("|---|---|")
    print(f"| in-process fit (co-review + transitions w1, w2) + as lists | {python_s:.2f} |")
    print(f"| Spark session start ({args.master}) | {start_s:.2f} |")
    print(f"| Spark job (all five kinds, collected on the driver) | {spark_s:.2f} |")
    print(f"| retriever: matrices from the stored lists | {build_s:.2f} |")
    print(f"pairs per kind: {result.meta['pairs']}")
    print(f"identical lists: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
