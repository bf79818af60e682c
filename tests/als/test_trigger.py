"""The retrain trigger: real broker (reviews.v1), real DB state, real Celery message in Redis."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from kafka.consumer.fetcher import ConsumerRecord

from services.als import store
from services.als.config import AlsSettings
from services.als.trigger import STATE_KEY, RetrainTrigger
from shared.events import REVIEWS, ReviewEvent
from shared.kafka import ConsumerLoop, ensure_topics, make_producer


@pytest.fixture
def trig_settings(als_settings: AlsSettings, unique: str) -> AlsSettings:
    store.write_state(als_settings.database_url, STATE_KEY, {})
    return als_settings.model_copy(
        update={
            "TOPIC_PREFIX": f"t{unique}.",
            "ALS_RETRAIN_AFTER_N_REVIEWS": 5,
            "ALS_TRIGGER_GROUP": f"als-trigger-{unique}",
        }
    )


def _produce(settings: AlsSettings, n: int) -> None:
    ensure_topics(settings, [REVIEWS], partitions=1)
    producer = make_producer(settings)
    for i in range(n):
        event = ReviewEvent(user_id=f"u{i}", parent_asin=f"p{i}", timestamp=1_700_000_000_000 + i, rating=4.0)
        producer.send(settings.topic(REVIEWS), key=event.user_id, value=event.model_dump(mode="json"))
    producer.flush(timeout=10)
    producer.close()


def _queued_task_ids(settings: AlsSettings) -> list[str]:
    client = redis.Redis.from_url(settings.celery_broker_url)
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange("als", 0, -1)]


def test_enqueues_a_celery_training_after_n_reviews_and_ignores_replays(trig_settings: AlsSettings) -> None:
    _produce(trig_settings, 7)
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


def test_waits_for_a_running_training_then_fires(trig_settings: AlsSettings) -> None:
    url = trig_settings.database_url
    queued: list[str] = []
    trigger = RetrainTrigger(trig_settings, enqueue=queued.append, idle_check_s=0)
    records = [
        ConsumerRecord(
            topic="t.reviews.v1",
            partition=0,
            leader_epoch=None,
            offset=o,
            timestamp=0,
            timestamp_type=0,
            key=None,
            value=b"{}",
            headers=[],
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=2,
            serialized_header_size=0,
        )
        for o in range(6)
    ]
    assert store.acquire_lease(url, owner="busy", ttl_s=60)
    try:
        trigger.handle(records)
        assert queued == [] and store.read_state(url, STATE_KEY)["pending"] == 6  # kept, not forgotten
    finally:
        store.release_lease(url, owner="busy")
    trigger.check()  # the idle poll sees the lease gone
    assert len(queued) == 1 and store.read_state(url, STATE_KEY)["pending"] == 0


def test_celery_app_has_the_beat_schedule(als_settings: AlsSettings) -> None:
    from services.als.tasks import TASK_NAME, make_celery

    app = make_celery(als_settings.model_copy(update={"ALS_RETRAIN_INTERVAL_S": 120}))
    entry = app.conf.beat_schedule["als-periodic-retrain"]
    assert entry["task"] == TASK_NAME and entry["schedule"] == 120.0 and entry["options"]["queue"] == "als"
    assert TASK_NAME in app.tasks
    assert make_celery(als_settings).conf.beat_schedule == {}  # interval 0 disables it
