"""Recommendation quality on the real data sets: one HR@10 / NDCG@10 table, baselines beside it.

    .venv/bin/python bench/quality.py                                   # every set, the reference strategies
    .venv/bin/python bench/quality.py --sets gift-cards,magazines --strategies popular,sources_blend,hybrid
    .venv/bin/python bench/quality.py --data ../shared/data --out /tmp/quality
    .venv/bin/python bench/quality.py --sets magazines --strategies itemknn,hybrid --seeds 1,2,3,4,5

Each set is evaluated by ``recsys evaluate`` in its own process (``RECSYS_LLM_BACKEND=template``,
leave-last-out, full ranking over every item the user has not reviewed, ties by ``parent_asin``,
k = 10): gift cards, magazines and the multi-category slice with all users, Toys 2014 with
``--toys-users`` (3,000) sampled users (seed 42). ``--seeds 1,2,3`` evaluates the seeded
strategies (``--seed-strategies``, default hybrid) again with each of those seeds and prints their
spread: the ranking core's own randomness (validation folds, LightGBM sampling) moves a few hundred
users' HR@10 by several users, as much as the gaps it is compared on. The table puts the published full-ranking Toys
figures (SASRec, TIGER) and issue 13's targets beside the measured ones; the machine and the wall
time of each set are printed with it. The data is not in the repository (``../shared/data`` in
development, see its README); sets that are missing are reported as such and the bench still exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_description  # noqa: E402

REFERENCE = "popular,popular_count,itemknn,itemknn_seq,tfidf,sources_blend"
K = 10


@dataclass(frozen=True)
class DataSet:
    name: str
    folder: str
    reviews: str
    meta: str
    users: int  # 0 = all
    target: tuple[float, float]  # issue 13's "done when" HR@10 / NDCG@10 for hybrid


SETS = {
    "gift-cards": DataSet("gift-cards", "amazon-2018-gift-cards-5core", "reviews.jsonl", "meta.jsonl", 0,
                          (0.42, 0.23)),
    "magazines": DataSet("magazines", "amazon-2018-magazines-5core", "reviews.jsonl", "meta.jsonl", 0,
                         (0.44, 0.30)),
    "multicategory": DataSet("multicategory", "amazon-2023-multicategory", "reviews.jsonl", "meta.jsonl", 0,
                             (0.20, 0.11)),
    "toys": DataSet("toys", "amazon-2014-toys-5core-sequences", "reviews.jsonl.gz", "meta.jsonl.gz", 3000,
                    (0.105, 0.069)),
}
# Published full-ranking leave-one-out results on the Toys 2014 5-core (HR@10, NDCG@10).
PUBLISHED_TOYS = {"SASRec": (0.0675, 0.0374), "TIGER": (0.0712, 0.0432)}


def default_data_dir() -> Path:
    return Path(os.environ.get("RECSYS_DATA_DIR", ROOT.parent / "shared" / "data"))


def evaluate(ds: DataSet, *, data: Path, out: Path, strategies: str, users: int, seed: int,
             timeout_s: float) -> tuple[dict | None, float, str]:
    """One ``recsys evaluate`` run: (metrics.json or None, wall seconds, why it failed)."""
    reviews, meta = data / ds.folder / ds.reviews, data / ds.folder / ds.meta
    if not reviews.is_file() or not meta.is_file():
        return None, 0.0, f"no data at {reviews.parent}"
    command = [sys.executable, "-m", "tools.cli", "evaluate", "--reviews", str(reviews), "--meta", str(meta),
               "--out", str(out), "--k", str(K), "--strategies", strategies, "--users", str(users),
               "--seed", str(seed)]
    env = {**os.environ, "RECSYS_LLM_BACKEND": "template", "RECSYS_HOME": str(out / "home")}
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - started, f"ran past {timeout_s:.0f} s"
    seconds = time.perf_counter() - started
    metrics = out / "metrics.json"
    if not metrics.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, seconds, f"exit {proc.returncode}: {tail[0][:300]}"
    doc = json.loads(metrics.read_text())
    why = "; ".join(f"{s}: {e}" for s, e in doc.get("failed", {}).items())
    return doc, seconds, why


def cell(pair: tuple[float, float] | None, *, bold: bool = False, digits: int = 3) -> str:
    if pair is None:
        return "–"
    text = f"{pair[0]:.{digits}f} / {pair[1]:.{digits}f}"
    return f"**{text}**" if bold else text


def table(rows: list[tuple[DataSet, dict | None, float, str]], strategies: list[str]) -> str:
    head = ["data set (users scored)", *strategies, "issue 13 target (hybrid)", *PUBLISHED_TOYS, "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds, doc, seconds, why in rows:
        published = [cell(PUBLISHED_TOYS[m], digits=4) if ds.name == "toys" else "–" for m in PUBLISHED_TOYS]
        if doc is None:
            lines.append("| " + " | ".join([ds.name, *(["–"] * len(strategies)), cell(ds.target), *published,
                                            f"{seconds:.0f} ({why})"]) + " |")
            continue
        got: dict[str, tuple[float, float]] = {}
        for s in strategies:
            block = doc["strategies"].get(s, {}).get("overall", {})
            if f"hit_rate@{K}" in block:
                got[s] = (block[f"hit_rate@{K}"], block[f"ndcg@{K}"])
        best_ndcg = max((v[1] for v in got.values()), default=None)
        # "–": not run on this set (see --toys-strategies) or failed (listed below the table)
        cells = [cell(got.get(s), bold=s in got and got[s][1] == best_ndcg) for s in strategies]
        label = f"{ds.name} ({doc['n_users']})"
        lines.append("| " + " | ".join([label, *cells, cell(ds.target), *published, f"{seconds:.0f}"]) + " |")
    return "\n".join(lines)


def seed_table(spread: dict[str, dict[int, dict | None]], strategies: list[str], seeds: list[int]) -> str:
    """One row per (set, strategy): HR@10 / NDCG@10 at each seed, then the mean and the HR@10 range."""
    head = ["data set", "strategy", *(f"seed {s}" for s in seeds), "mean", "HR@10 min-max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, docs in spread.items():
        for strategy in strategies:
            got = []
            for seed in seeds:
                block = ((docs.get(seed) or {}).get("strategies", {}).get(strategy, {}).get("overall", {}))
                got.append((block[f"hit_rate@{K}"], block[f"ndcg@{K}"]) if f"hit_rate@{K}" in block else None)
            done = [g for g in got if g is not None]
            mean = (sum(g[0] for g in done) / len(done), sum(g[1] for g in done) / len(done)) if done else None
            span = f"{min(g[0] for g in done):.3f}-{max(g[0] for g in done):.3f}" if done else "–"
            lines.append("| " + " | ".join([name, strategy, *(cell(g) for g in got), cell(mean), span]) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir(), help="folder with the data sets")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {','.join(SETS)}")
    ap.add_argument("--strategies", default=REFERENCE)
    ap.add_argument("--toys-users", type=int, default=3000, help="users sampled on Toys (0 = all)")
    ap.add_argument("--toys-strategies", default="",
                    help="strategies on Toys when they differ (3,000 profiles take long); default: --strategies")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--seeds", default="", help="more seeds for --seed-strategies, e.g. 1,2,3,4,5: their spread")
    ap.add_argument("--seed-strategies", default="hybrid", help="strategies run again with each of --seeds")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per data set")
    ap.add_argument("--out", type=Path, default=None, help="keep each set's metrics.json/report.md here")
    args = ap.parse_args()

    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [n for n in names if n not in SETS]
    if unknown:
        print(f"unknown sets {unknown}; choose from {', '.join(SETS)}", file=sys.stderr)
        return 2
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    seeded = [s.strip() for s in args.seed_strategies.split(",") if s.strip()]
    machine = machine_description()
    started = time.perf_counter()
    rows = []
    spread: dict[str, dict[int, dict | None]] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-quality-") as tmp:
        base = args.out or Path(tmp)
        for name in names:
            ds = SETS[name]
            users = args.toys_users if name == "toys" else ds.users
            run = strategies
            if name == "toys" and args.toys_strategies:
                run = [s.strip() for s in args.toys_strategies.split(",") if s.strip()]
            print(f"{name}: evaluating {','.join(run)} (users: {users or 'all'})", flush=True)
            doc, seconds, why = evaluate(ds, data=args.data, out=base / name, strategies=",".join(run),
                                         users=users, seed=args.seed, timeout_s=args.timeout)
            print(f"{name}: {'done' if doc else 'not measured'} in {seconds:.0f} s {why}", flush=True)
            rows.append((ds, doc, seconds, why))
            if seeds:
                spread[name] = {args.seed: doc}
            for extra in seeds:
                print(f"{name}: {','.join(seeded)} with seed {extra}", flush=True)
                more, more_s, more_why = evaluate(ds, data=args.data, out=base / name / f"seed{extra}",
                                                  strategies=",".join(seeded), users=users, seed=extra,
                                                  timeout_s=args.timeout)
                print(f"{name}: seed {extra} {'done' if more else 'not measured'} in {more_s:.0f} s {more_why}",
                      flush=True)
                spread[name][extra] = more
    total = time.perf_counter() - started
    print()
    print(f"HR@{K} / NDCG@{K}, leave-last-out (last review per user held out), full ranking over every item "
          "the user has not reviewed, ties by parent_asin; RECSYS_LLM_BACKEND=template; bold = best NDCG "
          "of the row.")
    print()
    print(table(rows, strategies))
    print()
    if spread:
        print(seed_table(spread, seeded, [args.seed, *seeds]))
        print()
    print("Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))
    print(f"Wall time: {total:.0f} s in total")
    for ds, doc, _, why in rows:
        if doc is not None and why:
            print(f"{ds.name}: failed strategies: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
