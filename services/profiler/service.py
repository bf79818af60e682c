"""Build and store profiles: load histories → generate in batches → embed → upsert + outbox → publish.

Delivery of ``profiles.v1``: the ``ProfileEvent`` is written to the ``outbox`` table in the SAME
transaction as the profile row (so a stored profile always gets its event); right after the commit
the profiler publishes its own outbox rows (fast path, low freshness latency) and marks them
published. If that publish fails (broker down), the rows stay pending and the ingest service's outbox
relay publishes them later. Duplicates are possible (at-least-once) and carry a stable ``event_id``.

Idempotency: a job rebuilds a profile from the DB state. A user whose stored profile was already
built from the same state (same review count, latest review, model and prompt version) is skipped
unless ``force=True``, so a redelivered job neither re-runs the LLM nor bumps the version.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.profiler.config import ProfilerSettings
from services.profiler.history import History, build_history
from services.profiler.profiles import ProfileResult, profiles_from_histories
from services.profiler.prompts import PROMPT_VERSION
from shared.db import session_scope
from shared.embeddings import to_bytes
from shared.events import PROFILES, ProfileEvent
from shared.llm import LLM
from shared.logging import get_logger
from shared.models import Item, OutboxEvent, Profile, Review, utcnow
from shared.vocab import catalog_vocabulary

log = get_logger(__name__)

PROFILES_BUILT = Counter("recsys_profiles_built_total", "profiles written", ["status", "source"])
PROFILES_SKIPPED = Counter("recsys_profiles_skipped_total", "profile jobs skipped: state unchanged")
BUILD_SECONDS = Histogram(
    "recsys_profile_batch_seconds",
    "seconds to build one batch of profiles",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)


def load_histories(session: Session, user_ids: Sequence[str], *, settings: ProfilerSettings) -> list[History]:
    """Each user's newest reviews joined with item titles, selected within the prompt budget."""
    rows = session.execute(
        select(Review.user_id, Review.parent_asin, Review.timestamp, Review.rating, Review.title, Review.text)
        .where(Review.user_id.in_(list(user_ids)))
        .order_by(Review.user_id, Review.timestamp.desc())
    ).all()
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if len(by_user[r.user_id]) < settings.PROFILER_MAX_REVIEWS:
            by_user[r.user_id].append(r._asdict())
    asins = {r["parent_asin"] for reviews in by_user.values() for r in reviews}
    titles = (
        dict(session.execute(select(Item.parent_asin, Item.title).where(Item.parent_asin.in_(asins))).all())
        if asins
        else {}
    )
    return [
        build_history(
            uid,
            by_user.get(uid, []),
            titles,
            budget_chars=settings.PROFILER_HISTORY_CHARS,
            max_reviews=settings.PROFILER_MAX_REVIEWS,
            review_chars=settings.PROFILER_REVIEW_CHARS,
        )
        for uid in user_ids
    ]


def _unchanged(profile: Profile | None, history: History, model_name: str) -> bool:
    return (
        profile is not None
        and profile.status in ("ready", "cold_start")
        and profile.n_reviews == history.n_reviews
        and profile.last_review_ts == history.last_review_ts
        and profile.prompt_version == PROMPT_VERSION
        and (profile.model_name == model_name or profile.status == "cold_start")
    )


def _embed(
    results: Sequence[ProfileResult], *, settings: ProfilerSettings, encoder: Any
) -> list[np.ndarray | None]:
    ready = [i for i, r in enumerate(results) if r.status == "ready"]
    vectors: list[np.ndarray | None] = [None] * len(results)
    if not ready:
        return vectors
    if encoder is None:
        from shared.embeddings import get_encoder

        encoder = get_encoder(settings.EMBEDDING_MODEL)
    matrix = encoder.encode([results[i].text() for i in ready])
    for i, vec in zip(ready, matrix, strict=True):
        vectors[i] = vec
    return vectors


def _upsert(session: Session, result: ProfileResult, vector: np.ndarray | None) -> tuple[Profile, int]:
    """Write the profile row (version bumped) and its outbox event; returns (row, outbox id)."""
    q = select(Profile).where(Profile.user_id == result.user_id)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()  # two jobs for one user serialise on the row: versions never collide
    row = session.scalars(q).one_or_none()
    if row is None:
        row = Profile(user_id=result.user_id, version=0, created_at=utcnow())
        session.add(row)
    row.version = (row.version or 0) + 1
    row.status = result.status
    row.source = result.source
    row.summary_source = result.summary_source
    for name, terms in result.profile.to_dict().items():
        setattr(row, name, terms)
    row.summary = result.summary
    row.embedding = to_bytes(vector) if vector is not None else None
    row.model_name = result.model_name
    row.prompt_version = result.prompt_version
    row.n_reviews = result.n_reviews
    row.last_review_ts = result.last_review_ts
    row.error = result.error
    row.updated_at = utcnow()
    session.flush()
    event = ProfileEvent(
        user_id=row.user_id,
        version=row.version,
        status=row.status,
        source=row.source,
        embedding=[float(x) for x in vector] if vector is not None else None,
    )
    outbox = OutboxEvent(topic=PROFILES, key=row.user_id, payload=event.model_dump(mode="json"))
    session.add(outbox)
    session.flush()
    return row, outbox.id


def build_profiles(
    user_ids: Sequence[str],
    *,
    settings: ProfilerSettings,
    llm: LLM | None,
    encoder: Any = None,
    force: bool = False,
    publish: bool | None = None,
) -> list[Profile]:
    """Build, store and announce the profiles of ``user_ids`` (batched by ``PROFILER_BATCH_SIZE``).

    ``llm=None`` builds extractive profiles (recorded as such). Returns the written rows (detached).
    """
    user_ids = list(dict.fromkeys(u for u in user_ids if u))
    vocab = catalog_vocabulary(
        database_url=settings.database_url,
        home=settings.ensure_home(),
        k=settings.PROFILER_VOCAB_K,
        ttl_s=settings.PROFILER_VOCAB_TTL_S,
    )
    model_name = getattr(llm, "name", "none") if llm is not None else "none"
    written: list[Profile] = []
    outbox_ids: list[int] = []
    size = settings.PROFILER_BATCH_SIZE
    for start in range(0, len(user_ids), size):
        batch = user_ids[start : start + size]
        started = time.monotonic()
        with session_scope(settings.database_url) as session:
            histories = load_histories(session, batch, settings=settings)
            existing = {
                p.user_id: p for p in session.scalars(select(Profile).where(Profile.user_id.in_(batch)))
            }
        todo = [h for h in histories if force or not _unchanged(existing.get(h.user_id), h, model_name)]
        PROFILES_SKIPPED.inc(len(histories) - len(todo))
        if not todo:
            continue
        results = profiles_from_histories(
            todo,
            llm=llm,
            vocab=vocab,
            max_terms=settings.PROFILER_MAX_TERMS,
            max_new_tokens=settings.PROFILER_MAX_NEW_TOKENS,
            summary_tokens=settings.PROFILER_SUMMARY_TOKENS,
        )
        vectors = _embed(results, settings=settings, encoder=encoder)
        with session_scope(settings.database_url) as session:
            for result, vector in zip(results, vectors, strict=True):
                row, outbox_id = _upsert(session, result, vector)
                written.append(row)
                outbox_ids.append(outbox_id)
        for r in results:
            PROFILES_BUILT.labels(r.status, r.source).inc()
        elapsed = time.monotonic() - started
        BUILD_SECONDS.observe(elapsed)
        log.info(
            "profiles built",
            extra={
                "users": len(results),
                "seconds": round(elapsed, 2),
                "sources": [r.source for r in results],
                "model": model_name,
            },
        )
    if outbox_ids and (settings.PROFILER_PUBLISH_DIRECT if publish is None else publish):
        publish_outbox(outbox_ids, settings=settings)
    return written


def write_provisional(user_ids: Sequence[str], *, settings: ProfilerSettings) -> int:
    """Extractive profiles (milliseconds, no LLM) for users without a ready profile.

    Called by the trigger before it queues the LLM job, so a new user is personalised within seconds
    even while the GPU/LLM queue is long; the LLM job then replaces the row (its model name differs).
    """
    with session_scope(settings.database_url) as session:
        ready = set(session.scalars(select(Profile.user_id).where(
            Profile.user_id.in_(list(user_ids)), Profile.status == "ready")))
    missing = [u for u in user_ids if u not in ready]
    if not missing:
        return 0
    # The ingest relay publishes the outbox rows: the trigger never blocks on the broker.
    return len(build_profiles(missing, settings=settings, llm=None, publish=False))


_producers: dict[str, Any] = {}


def close_producers() -> None:
    """Close the cached direct-publish producers (worker shutdown, end of a test session)."""
    while _producers:
        _, producer = _producers.popitem()
        try:
            producer.close(timeout=2)
        except Exception:  # a broker that is already gone
            log.debug("producer close failed", exc_info=True)


def publish_outbox(ids: Sequence[int], *, settings: ProfilerSettings) -> int:
    """Publish these outbox rows now and mark them published; leaves them to the relay on failure."""
    from shared.kafka import make_producer

    try:
        with session_scope(settings.database_url) as session:
            q = (
                select(OutboxEvent)
                .where(OutboxEvent.id.in_(list(ids)), OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.id)
            )
            if session.get_bind().dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)  # the relay may hold some: it publishes those
            rows = list(session.scalars(q))
            if not rows:
                return 0
            producer = _producers.get(settings.KAFKA_BOOTSTRAP)
            if producer is None:
                producer = _producers[settings.KAFKA_BOOTSTRAP] = make_producer(settings)
            futures = [producer.send(settings.topic(r.topic), key=r.key, value=r.payload) for r in rows]
            producer.flush(timeout=10)
            for fut in futures:
                fut.get(timeout=0)
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_([r.id for r in rows]))
                .values(published_at=utcnow(), attempts=OutboxEvent.attempts + 1)
            )
        return len(rows)
    except Exception as exc:  # broker down: the rows stay pending, the relay retries
        log.warning(
            "direct publish failed; left to the outbox relay",
            extra={"error": f"{type(exc).__name__}: {exc}", "events": len(ids)},
        )
        _producers.pop(settings.KAFKA_BOOTSTRAP, None)
        return 0
