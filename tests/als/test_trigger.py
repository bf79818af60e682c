"""The retrain trigger: real broker (reviews.v1), real DB state, real Celery message in Redis."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis
from kafka.consumer.fetcher import ConsumerRecord

from services.als import store
from services.als.config import AlsSettings
from services.als.trigger import STATE_KEY, RetrainTrigger, mark_started
from shared.db import session_scope
from shared.events import REVIEWS, ReviewEvent
from shared.kafka import ConsumerLoop, ensure_topics, make_producer
from shared.models import Review


@pytest.fixture
def trig_settings(als_settings: AlsSettings, unique: str) -> AlsSettings:
    # Count from the reviews already in the session database: this test's reviews are the new ones.
    with session_scope(als_settings.database_url) as s:
        newest = store.newest_review_id(s)
    store.write_state(als_settings.database_url, STATE_KEY, {"watermark": newest})
    return als_settings.model_copy(
        update={
            "TOPIC_PREFIX": f"t{unique}.",
            "ALS_RETRAIN_AFTER_N_REVIEWS": 5,
            "ALS_TRIGGER_GROUP": f"als-trigger-{unique}",
        }
    )


def _store_reviews(settings: AlsSettings, n: int) -> list[ReviewEvent]:
    """``n`` new reviews in the database (what ingest writes) and their reviews.v1 events."""
    tag = uuid.uuid4().hex[:8]
    events = [
        ReviewEvent(user_id=f"u{tag}-{i}", parent_asin=f"p{i}", timestamp=1_700_000_000_000 + i, rating=4.0)
        for i in range(n)
    ]
    with session_scope(settings.database_url) as s:
        s.add_all(
            Review(user_id=e.user_id, parent_asin=e.parent_asin, timestamp=e.timestamp, rating=e.rating)
            for e in events
        )
    return events


def _produce(settings: AlsSettings, events: list[ReviewEvent]) -> None:
    ensure_topics(settings, [REVIEWS], partitions=1)
    producer = make_producer(settings)
    for event in events:
        producer.send(settings.topic(REVIEWS), key=event.user_id, value=event.model_dump(mode="json"))
    producer.flush(timeout=10)
    producer.close()


def _queued_task_ids(settings: AlsSettings) -> list[str]:
    client = redis.Redis.from_url(settings.celery_broker_url)
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange("als", 0, -1)]


def _record(offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        topic="t.reviews.v1", partition=0, leader_epoch=None, offset=offset, timestamp=0, timestamp_type=0,
        key=None, value=b"{}", headers=[], checksum=None, serialized_key_size=0, serialized_value_size=2,
        serialized_header_size=0,
    )


def test_enqueues_a_celery_training_after_n_reviews_and_ignores_replays(trig_settings: AlsSettings) -> None:
    _produce(trig_settings, _store_reviews(trig_settings, 7))
    trigger = RetrainTrigger(trig_settings)  # real Celery enqueue into Redis
    seen: list[ConsumerRecord] = []

    def handler(records: list[ConsumerRecord]) -> None:
        trigger.handle(records)
        seen.extend(records)

    loop = ConsumerLoop(
        settings=trig_settings,
        topics=[REVIEWS],
        group_id=trig_settings.ALS_TRIGGER_GROUP,
        handler=handler,
        name="als-trigger-test",
    )
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while len(seen) < 7 and time.monotonic() < deadline:
        time.sleep(0.2)
    loop.stop()
    thread.join(timeout=30)
    assert len(seen) == 7

    state = store.read_state(trig_settings.database_url, STATE_KEY)
    assert state["counted"] == 7 and state["pending"] == 0  # >= 5 new reviews fired one training
    assert state["last_run_id"] in _queued_task_ids(trig_settings)

    trigger.handle(seen)  # a replay after a crash before the Kafka commit changes nothing
    again = store.read_state(trig_settings.database_url, STATE_KEY)
    assert again["counted"] == 7 and again["pending"] == 0 and again["last_run_id"] == state["last_run_id"]


def test_a_recreated_topic_still_counts_every_new_review(trig_settings: AlsSettings) -> None:
    """After a broker restart the topics start again at offset 0: those reviews are new all the same."""
    url = trig_settings.database_url
    queued: list[str] = []
    trigger = RetrainTrigger(trig_settings.model_copy(update={"ALS_RETRAIN_AFTER_N_REVIEWS": 6}),
                             enqueue=queued.append)
    _store_reviews(trig_settings, 4)
    trigger.handle([_record(o) for o in range(100, 104)])
    assert store.read_state(url, STATE_KEY)["pending"] == 4 and queued == []
    _store_reviews(trig_settings, 3)
    trigger.handle([_record(o) for o in range(3)])  # offsets below the ones seen before the restart
    state = store.read_state(url, STATE_KEY)
    assert len(queued) == 1 and state["counted"] == 7 and state["pending"] == 0


def test_a_burst_queues_one_training_until_it_starts(trig_settings: AlsSettings) -> None:
    """One 5,000-review POST arrives as many batches: at most one training is queued, none piles up."""
    url = trig_settings.database_url
    queued: list[str] = []
    trigger = RetrainTrigger(trig_settings, enqueue=queued.append, idle_check_s=0)
    for batch in range(10):
        _store_reviews(trig_settings, 500)
        trigger.handle([_record(batch * 500 + o) for o in range(500)])
    assert len(queued) == 1  # queued and not yet started: the later batches wait behind it
    assert store.read_state(url, STATE_KEY)["pending"] == 4500
    # The queued run takes the lease: nothing else is queued while it runs ...
    assert store.acquire_lease(url, owner=queued[0], ttl_s=60)
    try:
        mark_started(trig_settings, queued[0])
        _store_reviews(trig_settings, 10)
        trigger.handle([_record(6000)])
        trigger.check()
        assert len(queued) == 1 and store.read_state(url, STATE_KEY)["queued_run_id"] is None
    finally:
        store.release_lease(url, owner=queued[0])
    # ... and exactly one more once it is done, for everything that arrived meanwhile.
    trigger.check()
    trigger.check()
    state = store.read_state(url, STATE_KEY)
    assert len(queued) == 2 and state["queued_run_id"] == queued[1] and state["pending"] == 0
    assert state["counted"] == 5010


def test_waits_for_a_running_training_then_fires(trig_settings: AlsSettings) -> None:
    url = trig_settings.database_url
    queued: list[str] = []
    trigger = RetrainTrigger(trig_settings, enqueue=queued.append, idle_check_s=0)
    _store_reviews(trig_settings, 6)
    assert store.acquire_lease(url, owner="busy", ttl_s=60)
    try:
        trigger.handle([_record(o) for o in range(6)])
        assert queued == [] and store.read_state(url, STATE_KEY)["pending"] == 6  # kept, not forgotten
    finally:
        store.release_lease(url, owner="busy")
    trigger.check()  # the idle poll sees the lease gone
    assert len(queued) == 1 and store.read_state(url, STATE_KEY)["pending"] == 0


def test_a_queued_run_that_never_started_is_replaced_after_its_ttl(trig_settings: AlsSettings) -> None:
    url = trig_settings.database_url
    queued: list[str] = []
    trigger = RetrainTrigger(trig_settings, enqueue=queued.append, idle_check_s=0)
    _store_reviews(trig_settings, 5)
    trigger.handle([_record(0)])
    _store_reviews(trig_settings, 5)
    trigger.handle([_record(1)])
    assert len(queued) == 1  # the first is still queued
    state = store.read_state(url, STATE_KEY)
    store.write_state(url, STATE_KEY, state | {"queued_at": time.time() - 2 * 3600})  # its message was lost
    trigger.check()
    assert len(queued) == 2


def test_celery_app_has_the_beat_schedule(als_settings: AlsSettings) -> None:
    from services.als.tasks import TASK_NAME, make_celery

    app = make_celery(als_settings.model_copy(update={"ALS_RETRAIN_INTERVAL_S": 120}))
    entry = app.conf.beat_schedule["als-periodic-retrain"]
    assert entry["task"] == TASK_NAME and entry["schedule"] == 120.0 and entry["options"]["queue"] == "als"
    assert TASK_NAME in app.tasks
    assert make_celery(als_settings).conf.beat_schedule == {}  # interval 0 disables it
