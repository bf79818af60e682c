#!/usr/bin/env python3
"""Ingest throughput: reviews/s through the HTTP API into the DB, and how long the relay takes to Kafka.

By default it starts its own tansu broker and an ingest service (``recsys serve ingest`` in a child
process, on free ports) on SQLite or a fresh PostgreSQL database, then posts synthetic reviews in
batches of 500 from a few concurrent clients for N seconds. With ``--url`` it targets a running
service instead (then only the HTTP figure is printed).

    .venv/bin/python bench/ingest.py --db sqlite --seconds 20
    .venv/bin/python bench/ingest.py --db postgres --seconds 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.broker import free_port, start_broker, wait_for_port  # noqa: E402
from shared.db import upgrade_database  # noqa: E402
from shared.models import OutboxEvent, Review  # noqa: E402
from tools.synth import generate  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "RECSYS_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def make_batches(n_batches: int, batch: int) -> list[bytes]:
    """Pre-encoded request bodies of unique synthetic reviews (so every record is a new row)."""
    reviews, _, _ = generate(users=2_000, items=400, seed=1)
    bodies = []
    for b in range(n_batches):
        tag = uuid.uuid4().hex[:8].upper()
        rows = []
        for i in range(batch):
            r = dict(reviews[(b * batch + i) % len(reviews)])
            r["user_id"] = f"A{tag}{i:05d}{r['user_id'][14:]}"[:28]
            rows.append(r)
        bodies.append(orjson.dumps({"reviews": rows}))
    return bodies


def load(url: str, bodies: list[bytes], *, seconds: float, clients: int, api_key: str | None) -> dict:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    lock = threading.Lock()
    state = {"next": 0, "accepted": 0, "errors": 0}
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            while time.monotonic() < stop_at:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                if i >= len(bodies):
                    return
                t0 = time.perf_counter()
                resp = http.post("/v1/reviews", content=bodies[i])
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if resp.status_code == 202:
                        state["accepted"] += resp.json()["accepted"]
                    else:
                        state["errors"] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "accepted": state["accepted"],
        "errors": state["errors"],
        "elapsed": elapsed,
        "requests": len(latencies),
        "p50": statistics.median(latencies) if latencies else 0.0,
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="target a running ingest service instead of starting one")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()

    n_batches = int(args.seconds * 20) + 10  # more than the service can take in the time given
    print(f"preparing {n_batches} batches of {args.batch} reviews ...", flush=True)
    bodies = make_batches(n_batches, args.batch)

    if args.url:
        r = load(args.url, bodies, seconds=args.seconds, clients=args.clients, api_key=args.api_key)
        print(
            f"HTTP → DB: {r['accepted'] / r['elapsed']:,.0f} reviews/s sustained ({r['accepted']:,} in "
            f"{r['elapsed']:.1f}s, {args.clients} clients, batch {args.batch}, p50 {r['p50'] * 1000:.0f} ms, "
            f"p95 {r['p95'] * 1000:.0f} ms, {r['errors']} errors)"
        )
        return 0

    work = Path(tempfile.mkdtemp(prefix="recsys-bench-ingest-"))
    broker_port, http_port = free_port(), free_port()
    broker = start_broker("127.0.0.1", broker_port, log_path=work / "tansu.log")
    pg_name = None
    if args.db == "postgres":
        pg_name = f"recsys_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{pg_name}"'))
        db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{pg_name}"
    else:
        db_url = f"sqlite:///{work / 'recsys.db'}"
    upgrade_database(db_url)
    env = dict(
        os.environ,
        RECSYS_HOME=str(work),
        RECSYS_DATABASE_URL=db_url,
        RECSYS_KAFKA_BOOTSTRAP=f"127.0.0.1:{broker_port}",
        RECSYS_LOG_LEVEL="WARNING",
        RECSYS_API_KEYS="",
    )
    log = open(work / "ingest.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "serve", "ingest", "--port", str(http_port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    engine = create_engine(db_url)
    try:
        if not wait_for_port("127.0.0.1", http_port, 60):
            print("ingest service did not start; see", work / "ingest.log")
            return 1
        url = f"http://127.0.0.1:{http_port}"
        while httpx.get(f"{url}/healthz").status_code != 200:
            time.sleep(0.2)
        t0 = time.monotonic()
        r = load(url, bodies, seconds=args.seconds, clients=args.clients, api_key=None)
        load_done = time.monotonic()
        with engine.connect() as c:
            stored = c.scalar(select(func.count()).select_from(Review))
            pending = c.scalar(
                select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
            )
        while pending:
            time.sleep(0.2)
            with engine.connect() as c:
                pending = c.scalar(
                    select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
                )
        drained = time.monotonic()
        print(f"db={args.db} clients={args.clients} batch={args.batch} seconds={args.seconds:.0f}")
        print(
            f"HTTP → DB: {r['accepted'] / r['elapsed']:,.0f} reviews/s sustained "
            f"({r['accepted']:,} reviews in "
            f"{r['elapsed']:.1f}s; {r['requests']} requests, p50 {r['p50'] * 1000:.0f} ms, "
            f"p95 {r['p95'] * 1000:.0f} ms, {r['errors']} errors; {stored:,} rows in the DB)"
        )
        print(
            f"DB → Kafka: outbox drained {drained - load_done:.1f}s after the load stopped; "
            f"end-to-end {r['accepted'] / (drained - t0):,.0f} reviews/s into DB + Kafka"
        )
        return 0 if r["errors"] == 0 and stored == r["accepted"] else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        broker.terminate()
        broker.wait(timeout=10)
        engine.dispose()
        if pg_name:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
