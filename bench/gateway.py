"""Load-test a running gateway: N concurrent clients per strategy, p50/p95/p99 and throughput.

By default it measures the stack as ``make demo`` leaves it (its users, default reasons ``auto``, the
answer cache on and off, every strategy):

    .venv/bin/python bench/gateway.py

    .venv/bin/python bench/gateway.py --url http://127.0.0.1:8000 \
        --users-file .recsys/demo-data/reviews.jsonl --concurrency 32 \
        --requests 800 --strategies hybrid,popular,als --reasons template,auto

Each run picks user ids from the reviews file (or synthetic unknown users), fires ``--requests``
requests with ``--concurrency`` clients sharing one pooled aiohttp session (the load generator shares
the machine with the stack: httpx's pool cost ~2.7 ms of CPU per request here, aiohttp's ~0.15 ms),
and prints one line per (strategy, reasons, cache) with the CPU each local stack process spent per
request. A cache-on row also gives the p95 of the answers the gateway computed (``X-Cache: miss``), and the
share served stale (read from the cache and recomputed behind the request, ``X-Cache: stale``). ``--trace FILE`` writes
every request (start offset, latency, user, X-Cache, the gateway's Server-Timing: its DB read and each
dependency call) to see whether slow ones cluster in time and where their time went.
Targets (issue 14): on the default stack, hybrid, popular and als p95 < 100 ms, llm_only < 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp


def load_users(path: Path | None, n: int, seed: int) -> list[str]:
    if path and path.exists():
        users: list[str] = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    users.append(json.loads(line)["user_id"])
                except (ValueError, KeyError):
                    continue
        users = sorted(set(users))
        random.Random(seed).shuffle(users)
        return users[:n] or ["BENCHUSER"]
    return [f"BENCHUSER{i:05d}" for i in range(n)]


def service_pids() -> dict[str, int]:
    """The local stack's processes (``recsys up``): {"gateway": pid, ...} from /proc command lines."""
    out: dict[str, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if "tools.cli" in words:
            for verb in ("serve", "consume", "worker"):
                if verb in words and words.index(verb) + 1 < len(words):
                    name = words[words.index(verb) + 1]
                    out[name if verb == "serve" else f"{verb} {name}"] = int(d.name)
        elif words and Path(words[0]).name == "tansu":
            out["broker"] = int(d.name)
    return out


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores; /proc/stat minus idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t = os.times()
    snap["loadgen"] = t.user + t.system
    snap["machine"] = machine_busy_seconds()
    return snap


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def run_one(
    url: str,
    users: list[str],
    *,
    strategy: str,
    reasons: str,
    concurrency: int,
    requests: int,
    k: int,
    timeout: float,
    cache: str = "on",
    trace: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    latencies: list[float] = []
    miss_ms: list[float] = []  # answers the gateway computed (X-Cache miss) in a cache-on row
    errors = 0
    degraded = 0
    hits = 0
    stale = 0
    stored = 0
    pending = 0
    headers = {"Cache-Control": "no-cache"} if cache == "off" else {}
    key = os.environ.get("RECSYS_ADMIN_KEY") or next(iter(os.environ.get("RECSYS_READ_KEYS", "").split(",")), "")
    if key:  # reads of personal data need a read or admin key where keys are configured
        headers["Authorization"] = f"Bearer {key}"
    counter = iter(range(requests))
    params = {"k": str(k), "strategy": strategy, "reasons": reasons}
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        base_url=url, connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as client:

        async def worker() -> None:
            nonlocal errors, degraded, hits, stale, stored, pending
            for i in counter:
                user = users[i % len(users)]
                t0 = time.perf_counter()
                x_cache = timing = None
                try:
                    async with client.get(
                        f"/v1/users/{user}/recommendations", params=params, headers=headers
                    ) as r:
                        body = await r.read()
                        ok = r.status == 200
                        x_cache = r.headers.get("X-Cache")
                        timing = r.headers.get("Server-Timing")
                        hits += x_cache in ("hit", "stale")
                        stale += x_cache == "stale"
                    if ok and b'"degraded":true' in body:
                        degraded += 1
                    stored += ok and b'"rerank":"stored"' in body
                    pending += ok and b'"rerank":"pending"' in body
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                latencies.append(time.perf_counter() - t0)
                if cache == "on" and x_cache == "miss":
                    miss_ms.append(1000 * latencies[-1])
                if trace is not None:
                    trace.append({"strategy": strategy, "cache": cache, "i": i, "user": user, "ok": ok,
                                  "x_cache": x_cache, "start_s": round(t0 - start, 4),
                                  "ms": round(1000 * latencies[-1], 2), "server_timing": timing})
                if not ok:
                    errors += 1

        # Warm-up: one request per client opens the pooled connections.
        async def warm() -> None:
            async with client.get("/healthz") as r:
                await r.read()

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        pids = service_pids()
        cpu0 = cpu_snapshot(pids)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu1 = cpu_snapshot(pids)
    ms = [x * 1000 for x in latencies]
    return {
        "strategy": strategy,
        "reasons": reasons,
        "n": len(ms),
        "errors": errors,
        "degraded": degraded,
        "cache": cache,
        "hit_ratio": hits / len(ms) if ms else 0.0,  # answers read from the cache, fresh or stale
        "stale_ratio": stale / len(ms) if ms else 0.0,
        "stored": stored,
        "pending": pending,
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "p99_ms": pct(ms, 99),
        "miss_n": len(miss_ms),
        "miss_p95_ms": pct(miss_ms, 95),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "rps": len(ms) / wall if wall else 0.0,
        # CPU milliseconds per request, per local process (only what runs on this machine)
        "cpu_ms": {n: 1000 * (cpu1[n] - cpu0[n]) / max(1, len(ms)) for n in cpu1},
    }


async def main_async(args: argparse.Namespace) -> None:
    users = load_users(Path(args.users_file) if args.users_file else None, args.users, args.seed)
    print(
        f"gateway {args.url}: {args.concurrency} concurrent clients, {args.requests} requests per row, "
        f"k={args.k}, {len(users)} users"
    )
    print(
        f"{'strategy':10} {'reasons':9} {'cache':9} {'n':>5} {'err':>4} {'degr':>5} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}  llm_only re-rank"
    )
    rows = [(r, s, c) for r in args.reasons.split(",") for s in args.strategies.split(",")
            for c in args.cache.split(",")]
    trace: list[dict[str, Any]] | None = [] if args.trace else None
    for reasons, strategy, cache in rows:
        n = args.requests if reasons != "llm" else max(args.concurrency, args.requests // 10)
        row = await run_one(
            args.url,
            users,
            strategy=strategy,
            reasons=reasons,
            concurrency=args.concurrency,
            requests=n,
            k=args.k,
            timeout=args.timeout,
            cache=cache,
            trace=trace,
        )
        label = "off" if cache == "off" else f"on {100 * float(row['hit_ratio']):.0f}%"
        stale_note = f"  {100 * float(row['stale_ratio']):.0f}% stale" if row["stale_ratio"] else ""
        print(
            f"{row['strategy']:10} {row['reasons']:9} {label:9} {row['n']:>5} {row['errors']:>4} "
            f"{row['degraded']:>5} "
            f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['rps']:>8.1f}"
            + (f"  stored {row['stored']}, pending {row['pending']}" if strategy == "llm_only" else "")
            + (f"  computed (miss) answers: {row['miss_n']}, p95 {row['miss_p95_ms']:.1f} ms"
               if cache == "on" and row["miss_n"] else "")
            + stale_note,
            flush=True,
        )
        cpu = {n: v for n, v in row["cpu_ms"].items() if v == v and v >= 0.05}
        machine = cpu.pop("machine", None)
        if cpu:
            print(
                f"{'':10} CPU ms/request: "
                + ", ".join(f"{n} {v:.1f}" for n, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
                + f" (processes {sum(cpu.values()):.1f}"
                + (f", whole machine {machine:.1f})" if machine is not None else ")"),
                flush=True,
            )
    if trace is not None:
        Path(args.trace).write_text("".join(json.dumps(t) + "\n" for t in trace), encoding="utf-8")
        print(f"trace of {len(trace)} requests in {args.trace}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--users-file", default=".recsys/demo-data/reviews.jsonl")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=640,
                   help="requests per strategy (rows with reasons=llm, which wait for the LLM, use a tenth)")
    p.add_argument("--strategies", default="hybrid,llm_only,popular,als")
    p.add_argument("--reasons", default="auto",
                   help="the explainer backend asked for: auto (the default stack's), template, llm (waits)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cache",
        default="on,off",
        help="off: every request sends Cache-Control: no-cache (computed afresh); on: the gateway's answer "
        "cache is used (the hit ratio is printed); both rows by default",
    )
    p.add_argument("--trace", default="", help="write one JSON line per request (start offset, latency, user, "
                   "X-Cache) to this file, to see whether slow requests cluster in time or by user")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
