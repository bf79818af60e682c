"""Online ranking cost of the ranking core: one user's candidates -> features -> model -> MMR.

    .venv/bin/python bench/ranker.py                 # Toys 2014 5-core from ../shared/data, else synth
    .venv/bin/python bench/ranker.py --users 2000 --depth 200

Fits a :class:`services.retriever.ranking.RankingCore` on the interactions (the Toys sequences when
``../shared/data`` has them: a large catalogue without text; otherwise ``recsys synth`` data), then
times ``core.rank`` for a sample of users with deep source lists (``--depth`` per source, so a few
hundred candidates each), once with the model it chose and once with a LightGBM LambdaRank model
(150 trees) in its place, so both costs are printed. Reported: candidates per user, p50 / p95 / p99
milliseconds per ranked answer, and the fit time. One process, one thread, on this machine.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ROOT, machine_description  # noqa: E402

from services.retriever.ranking import RankingCore  # noqa: E402
from services.retriever.ranking.learn import Queries, train_lambdarank  # noqa: E402
from services.retriever.sources.base import user_sequences  # noqa: E402

TOYS = ROOT.parent / "shared" / "data" / "amazon-2014-toys-5core-sequences" / "reviews.jsonl.gz"


def load() -> tuple[str, list[dict], list[dict]]:
    if TOYS.exists():
        with gzip.open(TOYS, "rt") as f:
            rows = [json.loads(line) for line in f]
        return "toys-2014-5core", rows, []
    from tools.synth import generate

    reviews, meta, _ = generate(users=3000, items=1500, seed=1)
    return "synth(3000 users, 1500 items)", reviews, meta


def percentiles(ms: list[float]) -> str:
    a = np.asarray(ms)
    return " / ".join(f"{np.percentile(a, p):.2f}" for p in (50, 95, 99))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=200, help="candidates per source")
    ap.add_argument("--tune-users", type=int, default=2000)
    args = ap.parse_args()
    name, reviews, items = load()
    t0 = time.perf_counter()
    core = RankingCore.fit(interactions=reviews, items=items, tune_users=args.tune_users, depth=args.depth,
                           popular_depth=100)
    fit_s = time.perf_counter() - t0
    seqs = user_sequences(reviews)
    users = sorted(random.Random(7).sample(sorted(seqs), min(args.users, len(seqs))))

    def run() -> tuple[list[float], list[int]]:
        ms, sizes = [], []
        for u in users:
            hist, seen = seqs[u], set(seqs[u])
            t = time.perf_counter()
            core.rank(history=hist, k=10, exclude=seen)
            ms.append((time.perf_counter() - t) * 1000)
            sizes.append(len(core.builder.build(history=hist, exclude=seen).asins))  # not timed
        return ms, sizes

    for u in users[:50]:  # warm-up
        core.rank(history=seqs[u], k=10, exclude=set(seqs[u]))
    chosen_ms, sizes = run()
    # the same candidates scored by a LambdaRank model of the default size
    n_feat = len(core.builder.feature_names)
    rng = np.random.default_rng(0)
    fake = [type("UC", (), {"asins": [f"a{i}" for i in range(300)], "matrix": rng.random((300, n_feat)),
                            "popularity": rng.random(300)})() for _ in range(40)]
    q = Queries.stack(fake, [f"a{rng.integers(300)}" for _ in fake], n_feat)  # type: ignore[arg-type]
    ranker, _ = train_lambdarank(q, feature_names=core.builder.feature_names, rounds=150,
                                 params={"min_data_in_leaf": 5})
    chosen_model, core.model = core.model, ranker
    lgbm_ms, _ = run()
    core.model = chosen_model
    print(f"data: {name}; {len(reviews):,} interactions; fit {fit_s:.1f} s "
          f"(model chosen: {core.report['model']['kind']}; MMR lambda {core.mmr_lambda})")
    print(f"candidates per user (depth {args.depth} per source): mean {np.mean(sizes):.0f}, "
          f"p95 {np.percentile(sizes, 95):.0f}, max {max(sizes)}")
    print("ms per ranked answer (candidates + features + model + MMR), p50 / p95 / p99:")
    print(f"  chosen model ({core.report['model']['kind']}): {percentiles(chosen_ms)}")
    print(f"  LightGBM LambdaRank, {ranker.booster.num_trees()} trees: {percentiles(lgbm_ms)}")
    print(f"users timed: {len(users)}")
    print("; ".join(f"{k}: {v}" for k, v in machine_description().items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
