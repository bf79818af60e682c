"""End to end with real processes: broker → trigger → Redis → Celery worker (real model) → DB + profiles.v1;
and a worker SIGKILLed mid-job: the job is redelivered and the profiles are written."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from services.profiler.summary import split_sentences
from services.profiler.tasks import enqueue, make_celery
from services.profiler.trigger import make_trigger
from shared.db import session_scope
from shared.events import PROFILES, REVIEWS, ReviewEvent
from shared.kafka import ensure_topics, make_producer
from shared.models import OutboxEvent, Profile
from tests.profiler.conftest import add_reviews, start_worker, stop_process
from tests.profiler.test_service import _events


def _profiles(settings, users: list[str]) -> dict[str, Profile]:
    with session_scope(settings.database_url) as s:
        return {p.user_id: p for p in s.scalars(select(Profile).where(Profile.user_id.in_(users)))}


def _wait_for(predicate, *, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


@pytest.mark.slow
def test_new_review_leads_to_a_stored_profile_and_a_profiles_event(
    psettings, catalog, unique, worker_log
) -> None:
    # The LLM path itself: no provisional extractive row first (tested in test_service.py).
    s = psettings.model_copy(update={"PROFILER_QUEUE": f"e2e-{unique}", "PROFILER_GROUP": f"e2e-{unique}",
                                     "PROFILER_PROVISIONAL": False})
    # Both topics exist before anyone subscribes: a consumer that subscribes to a topic that does not
    # exist yet only sees it after its next metadata refresh (minutes).
    ensure_topics(s, [REVIEWS, PROFILES])
    worker = start_worker(s, worker_log)
    loop, _ = make_trigger(s)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    user = f"e2e-{unique}"
    try:
        rows = add_reviews(
            s,
            user,
            [
                (catalog["shampoo"], 5, "This argan oil shampoo fixed my dry hair, gentle and smells nice."),
                (catalog["conditioner"], 4, "Good conditioner for dry hair, sulfate free."),
            ],
        )
        producer = make_producer(s)
        for row in rows:
            producer.send(s.topic(REVIEWS), key=user, value=ReviewEvent(**row).model_dump())
        producer.flush()
        producer.close()
        _wait_for(lambda: user in _profiles(s, [user]), timeout_s=400, what="the profile row", log=worker_log)
        profile = _profiles(s, [user])[user]
        assert profile.status == "ready" and profile.version == 1 and profile.embedding
        assert len(split_sentences(profile.summary)) == 3
        events = _events(s, user, want=1, timeout_s=90)
        with session_scope(s.database_url) as session:
            outbox = [
                (o.topic, o.published_at, o.attempts, o.last_error)
                for o in session.scalars(select(OutboxEvent).where(OutboxEvent.key == user))
            ]
        assert len(events) == 1, f"no profiles.v1 event; outbox {outbox}\n" + worker_log.read_text()[-3000:]
        [event] = events
        assert event["status"] == "ready" and event["version"] == 1
    finally:
        loop.stop()
        thread.join(timeout=30)
        stop_process(worker)


@pytest.mark.slow
def test_worker_killed_mid_job_loses_no_profile_job(psettings, catalog, unique, worker_log) -> None:
    s = psettings.model_copy(update={"PROFILER_QUEUE": f"kill-{unique}", "PROFILER_VISIBILITY_TIMEOUT_S": 4})
    users = [f"kill-{unique}-{i}" for i in range(2)]
    for i, user in enumerate(users):
        add_reviews(
            s,
            user,
            [
                (catalog["face wash"], 5, f"Gentle face wash for sensitive skin number {i}, love it."),
                (catalog["night cream"], 4, "Rich night cream, fragrance free, good for dry skin."),
            ],
        )
    extra = {"RECSYS_PROFILER_VISIBILITY_TIMEOUT_S": "4"}
    first = start_worker(s, worker_log, **extra)
    second = None
    try:
        enqueue(make_celery(s), users, queue=s.PROFILER_QUEUE)
        _wait_for(
            lambda: "received" in worker_log.read_text(),
            timeout_s=300,
            what="the job to start",
            log=worker_log,
        )
        time.sleep(1.0)
        os.killpg(first.pid, signal.SIGKILL)  # no goodbye: no ack, no requeue by the worker itself
        first.wait(timeout=10)
        assert len(_profiles(s, users)) < len(users), "the job finished before the kill; nothing was tested"
        second_log = worker_log.with_name("worker-2.log")
        second = start_worker(s, second_log, **extra)
        _wait_for(
            lambda: len(_profiles(s, users)) == len(users),
            timeout_s=400,
            what="redelivered job",
            log=second_log,
        )
        profiles = _profiles(s, users)
        # The job ran again on the second worker with its LLM loaded (model_name "none" would be a worker
        # without one), and no user was written twice (one the killed worker had finished is skipped).
        assert all(
            p.status == "ready" and p.model_name not in (None, "none") and p.version == 1 for p in profiles.values()
        ), [(p.user_id, p.status, p.model_name, p.version) for p in profiles.values()]
        _wait_for(lambda: "succeeded" in second_log.read_text(), timeout_s=30, what="the ack", log=second_log)
        assert "build_profile" in second_log.read_text() and "received" in second_log.read_text()
    finally:
        stop_process(first)
        if second is not None:
            stop_process(second)
