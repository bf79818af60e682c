"""Retriever benchmark: embedding throughput, index build, top-200 query latency, HNSW recall.

    .venv/bin/python bench/retriever.py                 # 112k items, Flat and HNSW
    .venv/bin/python bench/retriever.py --items 20000 --embed-sample 500 --kinds flat,hnsw,ivf

What is real and what is extrapolated (printed again with the figures):
* embedding: ``--embed-sample`` template item texts are embedded with the real model (the configured
  ``RECSYS_EMBEDDING_MODEL``); items/s is measured on them and the time for the full catalog is
  extrapolated (embedding 112k items on a shared 2-core machine takes far too long to repeat here).
* index: the sample's real vectors are extended to ``--items`` vectors by adding Gaussian noise to
  sampled real vectors and renormalizing, so the catalog is clustered like real embeddings are;
  build time, query latency and recall are measured on those vectors.
* queries: short shopper queries embedded with the real model.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FAMILIES = {
    "running shoes": ["breathable mesh", "cushioned sole", "wide toe box", "lightweight", "trail grip"],
    "coffee maker": ["programmable timer", "thermal carafe", "12 cup", "auto shut-off", "reusable filter"],
    "yoga mat": ["non-slip", "extra thick", "eco-friendly TPE", "carrying strap", "alignment lines"],
    "gaming mouse": ["16000 DPI", "RGB lighting", "programmable buttons", "wireless", "ergonomic grip"],
    "face moisturizer": ["hyaluronic acid", "fragrance free", "SPF 30", "for sensitive skin", "non-greasy"],
    "dog toy": ["squeaky", "durable rubber", "chew resistant", "for large breeds", "floats in water"],
    "chef knife": ["German steel", "full tang", "razor sharp", "ergonomic handle", "8 inch blade"],
    "camping tent": ["waterproof", "4 person", "easy setup", "rainfly included", "mesh windows"],
    "lipstick": ["long lasting", "matte finish", "vegan", "hydrating", "cruelty free"],
    "bluetooth speaker": ["waterproof", "20 hour battery", "deep bass", "portable", "stereo pairing"],
    "baby blanket": ["organic cotton", "breathable", "machine washable", "hypoallergenic", "swaddle size"],
    "desk lamp": ["dimmable LED", "USB charging port", "adjustable arm", "eye-care", "touch control"],
}
ADJECTIVES = [
    "Premium",
    "Classic",
    "Ultra",
    "Compact",
    "Pro",
    "Deluxe",
    "Essential",
    "Everyday",
    "Smart",
    "Eco",
]
BRANDS = [
    "Acme",
    "Northwind",
    "Contoso",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
]
QUERIES = [
    "comfortable shoes for long runs",
    "quiet wireless mouse for work",
    "gift for a new mom",
    "coffee for the whole family in the morning",
    "tent for a rainy weekend",
    "moisturizer that does not irritate my skin",
    "sharp knife for cooking",
    "toy my big dog cannot destroy",
    "speaker for the pool",
    "lamp for late night reading",
    "red lipstick that lasts all day",
    "thick mat for home workouts",
]


def item_texts(n: int, rng: np.random.Generator) -> list[str]:
    fams = list(FAMILIES)
    out = []
    for i in range(n):
        fam = fams[i % len(fams)]
        feats = rng.choice(FAMILIES[fam], size=3, replace=False)
        out.append(
            f"{rng.choice(BRANDS)} {rng.choice(ADJECTIVES)} {fam.title()} {i}. Features: {'; '.join(feats)}. "
            f"Category: {fam}"
        )
    return out


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {f"p{p}": round(float(np.percentile(ms, p)), 3) for p in (50, 95, 99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=112_000)
    ap.add_argument("--embed-sample", type=int, default=2_000, help="texts embedded with the real model")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--kinds", default="flat,flat_fp16,hnsw", help="flat first: it is the recall reference")
    ap.add_argument("--hnsw-ef", default="256,512,1024", help="efSearch values measured on one HNSW build")
    ap.add_argument("--noise", type=float, default=0.6, help="norm of the noise added to derive vectors")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--faiss-threads", type=int, default=1, help="as RECSYS_RETRIEVER_FAISS_THREADS; 0 = all")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    import faiss

    from services.retriever.candidates import HistoryEntry, RankingParams, UserSignals, hybrid_candidates
    from services.retriever.catalog import Catalog
    from services.retriever.index import IndexConfig, IndexSnapshot, ItemVector, set_search_threads
    from services.retriever.store import SnapshotStore
    from shared.config import CommonSettings
    from shared.embeddings import get_encoder

    rng = np.random.default_rng(args.seed)
    set_search_threads(args.faiss_threads)
    figures: dict[str, object] = {
        "items": args.items,
        "k": args.k,
        "cpu_count": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    model = CommonSettings().EMBEDDING_MODEL
    t = time.perf_counter()
    enc = get_encoder(model)
    figures["model"] = model
    figures["faiss_threads"] = faiss.omp_get_max_threads()
    figures["model_load_s"] = round(time.perf_counter() - t, 2)

    texts = item_texts(args.embed_sample, rng)
    enc.encode(texts[:64])  # warm-up
    t, c = time.perf_counter(), time.process_time()
    sample = enc.encode(texts, batch_size=64)
    embed_s = time.perf_counter() - t
    embed_cpu_s = time.process_time() - c  # all threads: robust to other processes sharing the cores
    figures["embed_items_per_cpu_s"] = round(len(texts) / embed_cpu_s, 1)
    rate = len(texts) / embed_s
    figures["embed_items_per_s"] = round(rate, 1)
    figures["embed_sample"] = len(texts)
    figures["embed_full_catalog_extrapolated_s"] = round(args.items / rate, 1)
    print(
        f"embedding ({model}): {len(texts)} item texts in {embed_s:.1f}s = {rate:.0f} items/s; "
        f"{args.items} items extrapolated: {args.items / rate / 60:.1f} min (x2 with title vectors); "
        f"{len(texts) / embed_cpu_s:.0f} items per CPU-second"
    )

    # Extend the real vectors to the full catalog: real vector + noise, renormalized.
    base = sample[rng.integers(0, len(sample), args.items)]
    noise = rng.normal(size=base.shape).astype(np.float32)
    noise *= args.noise / np.linalg.norm(noise, axis=1, keepdims=True)
    vecs = base + noise
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[: len(sample)] = sample
    items = [ItemVector(f"B{i:09d}", f"h{i}", vecs[i], vecs[i]) for i in range(args.items)]
    queries = enc.encode(
        [QUERIES[i % len(QUERIES)] + f" {'please' * (i // len(QUERIES) % 3)}" for i in range(args.queries)]
    )

    results: dict[str, dict[str, object]] = {}
    truth: list[set[str]] = []
    kth: list[float] = []
    snaps = {}
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        config = IndexConfig(kind=kind)
        t = time.perf_counter()
        snap = IndexSnapshot.build(items, dim=enc.dim, model_name=model, config=config)
        build_s = time.perf_counter() - t
        snaps[kind] = snap
        efs = [int(e) for e in args.hnsw_ef.split(",")] if kind == "hnsw" else [0]
        for ef in efs:
            label = f"hnsw_ef{ef}" if ef else kind
            if ef:
                faiss.downcast_index(snap.index.index).hnsw.efSearch = ef  # type: ignore[attr-defined]
            for q in queries[:10]:
                snap.search(q, args.k)  # warm-up
            lat, cpu, hits = [], [], []
            for q in queries:
                t, c = time.perf_counter(), time.thread_time()
                hits.append(snap.search(q, args.k))
                cpu.append(time.thread_time() - c)
                lat.append(time.perf_counter() - t)
            cpu_p = percentiles(cpu)
            row: dict[str, object] = {"build_s": round(build_s, 2), **percentiles(lat), "cpu_ms": cpu_p}
            if kind == "flat":
                truth = [{a for a, _ in h} for h in hits]
                kth = [h[-1][1] for h in hits]
            elif truth:
                overlap = [len({a for a, _ in h} & tr) / args.k for h, tr in zip(hits, truth, strict=True)]
                row["recall_at_k_vs_flat"] = round(float(np.mean(overlap)), 4)
                # near-ties: a returned item scoring within 0.01 of flat's k-th best is as good a candidate
                tol = [sum(sc >= kt - 0.01 for _, sc in h) / args.k for h, kt in zip(hits, kth, strict=True)]
                row["recall_within_0.01"] = round(float(np.mean(tol)), 4)
            results[label] = row
            recall = (
                f"  recall@{args.k} vs flat {row['recall_at_k_vs_flat']:.4f} "
                f"(within 0.01 of flat's k-th score: {row['recall_within_0.01']:.4f})"
                if "recall_at_k_vs_flat" in row
                else ""
            )
            print(
                f"{label:10s} build {build_s:7.2f}s  top-{args.k} latency ms p50 {row['p50']:.2f} "
                f"p95 {row['p95']:.2f} p99 {row['p99']:.2f} "
                f"(CPU time p50 {cpu_p['p50']:.2f} p95 {cpu_p['p95']:.2f}){recall}"
            )
    figures["search"] = results

    if "flat" in snaps:
        snap = snaps["flat"]
        with tempfile.TemporaryDirectory() as tmp:
            store = SnapshotStore(Path(tmp))
            t = time.perf_counter()
            store.save(snap)
            save_s = time.perf_counter() - t
            t = time.perf_counter()
            store.load(config=IndexConfig())
            load_s = time.perf_counter() - t
        t = time.perf_counter()
        snap.with_updates(items[:100], config=IndexConfig())
        update_s = time.perf_counter() - t
        figures["flat_snapshot"] = {
            "save_s": round(save_s, 2),
            "load_s": round(load_s, 2),
            "update_100_items_s": round(update_s, 3),
        }
        print(
            f"flat snapshot: save {save_s:.2f}s, load {load_s:.2f}s, copy-on-write update of 100 items "
            f"{update_s:.3f}s"
        )

        # The whole hybrid pipeline (FAISS top 200 + filters + re-rank + MMR) on the full catalog.
        catalog = Catalog.from_items(
            [
                {
                    "parent_asin": it.parent_asin,
                    "title": f"item {i}",
                    "main_category": f"c{i % 12}",
                    "average_rating": 3.0 + (i % 20) / 10,
                    "rating_number": i % 50,
                }
                for i, it in enumerate(items)
            ]
        )
        params = RankingParams()
        lat, cpu = [], []
        for i, q in enumerate(queries):
            hist = tuple(
                HistoryEntry(items[(i * 7 + j) % args.items].parent_asin, 5.0, 1_600_000_000_000 + j)
                for j in range(5)
            )
            user = UserSignals(user_id=f"u{i}", history=hist, profile_vector=q)
            t, c = time.perf_counter(), time.thread_time()
            hybrid_candidates(index=snap, catalog=catalog, user=user, k=10, params=params)
            cpu.append(time.thread_time() - c)
            lat.append(time.perf_counter() - t)
        p, cpu_p = percentiles(lat), percentiles(cpu)
        figures["hybrid_pipeline_ms"] = p | {"cpu_ms": cpu_p}
        print(
            f"hybrid pipeline (flat, top 200 -> filters -> re-rank -> MMR k=10) ms: p50 {p['p50']:.2f} "
            f"p95 {p['p95']:.2f} p99 {p['p99']:.2f} (CPU time p50 {cpu_p['p50']:.2f} p95 {cpu_p['p95']:.2f})"
        )

    print(
        "note: embedding measured on the sample and extrapolated; index vectors = real sample vectors "
        "extended with noise (see the module docstring)"
    )
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
