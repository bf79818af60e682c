"""Build and store profiles: load histories → generate in batches → embed → upsert + outbox → publish.

Delivery of ``profiles.v1``: the ``ProfileEvent`` is written to the ``outbox`` table in the SAME
transaction as the profile row (``shared.outbox.add``, so a stored profile always gets its event);
right after the commit the profiler publishes its own outbox rows (``shared.outbox.publish``: fast
path, low freshness latency) and marks them published. If that publish fails (broker down), the rows
stay pending and the ingest service's outbox relay publishes them later. Duplicates are possible
(at-least-once) and carry a stable ``event_id``.

Idempotency: a job rebuilds a profile from the DB state. A user whose stored profile was already
built from the same state (same review count, latest review, model and prompt version) is skipped
unless ``force=True``, so a redelivered job neither re-runs the LLM nor bumps the version.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram
from sqlalchemy.orm import Session

from services.profiler import store
from services.profiler.config import ProfilerSettings
from services.profiler.history import History, build_history
from services.profiler.profiles import ProfileResult, profiles_from_histories
from services.profiler.prompts import PROMPT_VERSION
from shared import outbox
from shared.db import session_scope
from shared.llm import LLM, foreground_pause
from shared.logging import get_logger
from shared.models import Profile
from shared.text import dislikes_text
from shared.vocab import catalog_vocabulary

log = get_logger(__name__)

PROFILES_BUILT = Counter("recsys_profiles_built_total", "profiles written", ["status", "source"])
PROFILES_SKIPPED = Counter("recsys_profiles_skipped_total", "profile jobs skipped: state unchanged")
BUILD_SECONDS = Histogram(
    "recsys_profile_batch_seconds",
    "seconds to build one batch of profiles",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)


def load_histories(*, session: Session, user_ids: Sequence[str], settings: ProfilerSettings) -> list[History]:
    """Each user's newest reviews joined with item titles, selected within the prompt budget."""
    by_user = store.recent_reviews(session, user_ids=user_ids, per_user=settings.PROFILER_MAX_REVIEWS)
    titles = store.item_titles(session, asins={r["parent_asin"] for reviews in by_user.values() for r in reviews})
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
) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    """(profile vector, dislikes vector) per result: ready profiles get both (the dislikes one only
    when there are dislikes), in one encoder call, so a request never embeds either."""
    ready = [i for i, r in enumerate(results) if r.status == "ready"]
    vectors: list[tuple[np.ndarray | None, np.ndarray | None]] = [(None, None)] * len(results)
    if not ready:
        return vectors
    if encoder is None:
        from shared.embeddings import get_encoder

        encoder = get_encoder(settings.EMBEDDING_MODEL)
    dislikes = {i: dislikes_text(results[i].profile.dislikes) for i in ready}
    with_dislikes = [i for i in ready if dislikes[i]]
    foreground_pause(new_prompt=True)  # a background worker embeds when the services leave it the CPU
    matrix = encoder.encode([results[i].text() for i in ready] + [dislikes[i] for i in with_dislikes])
    negative = dict(zip(with_dislikes, matrix[len(ready):], strict=True))
    for i, vec in zip(ready, matrix[: len(ready)], strict=True):
        vectors[i] = (vec, negative.get(i))
    return vectors


def build_profiles(
    *,
    user_ids: Sequence[str],
    settings: ProfilerSettings,
    llm: LLM | None,
    encoder: Any = None,
    force: bool = False,
    publish: bool | None = None,
) -> list[Profile]:
    """Build, store and announce the profiles of ``user_ids`` (``LLM_BATCH_SIZE`` users per LLM batch).

    ``llm=None`` builds extractive profiles (recorded as such). ``publish`` (default
    ``PROFILER_PUBLISH_DIRECT``) publishes the events right after commit. Returns the written rows (detached).
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
    size = settings.LLM_BATCH_SIZE
    for start in range(0, len(user_ids), size):
        batch = user_ids[start : start + size]
        started = time.monotonic()
        with session_scope(settings.database_url) as session:
            histories = load_histories(session=session, user_ids=batch, settings=settings)
            existing = store.profiles_by_user(session, user_ids=batch)
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
            for result, (vector, dislike) in zip(results, vectors, strict=True):
                row, outbox_id = store.upsert_profile(session, result=result, vector=vector, dislike=dislike)
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
        outbox.publish(settings, ids=outbox_ids)
    return written


def write_provisional(*, user_ids: Sequence[str], settings: ProfilerSettings) -> int:
    """Extractive profiles (milliseconds, no LLM) for users without a ready profile.

    Called by the trigger before it queues the LLM job, so a new user is personalised within seconds
    even while the GPU/LLM queue is long; the LLM job then replaces the row (its model name differs).
    """
    with session_scope(settings.database_url) as session:
        ready = store.ready_user_ids(session, user_ids=user_ids)
    missing = [u for u in user_ids if u not in ready]
    if not missing:
        return 0
    # The ingest relay publishes the outbox rows: the trigger never blocks on the broker.
    return len(build_profiles(user_ids=missing, settings=settings, llm=None, publish=False))
