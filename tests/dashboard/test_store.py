"""The dashboard's own reads against the session's real broker, Redis and PostgreSQL."""

from __future__ import annotations

import time
import uuid

import redis

from services.dashboard import store
from shared.config import CommonSettings
from shared.kafka import ensure_topics, make_consumer, make_producer


def test_broker_topics_report_messages_and_each_groups_lag(settings: CommonSettings) -> None:
    topic = f"dash-lag-{uuid.uuid4().hex[:8]}"
    group = f"dash-group-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    for i in range(5):
        producer.send(settings.topic(topic), {"i": i}, key="k")
    producer.flush()
    producer.close()
    consumer = make_consumer(settings, topic, group_id=group, max_poll_records=2)
    got, deadline = 0, time.monotonic() + 60
    while got < 2 and time.monotonic() < deadline:
        got += sum(len(rs) for rs in consumer.poll(timeout_ms=1000, max_records=2).values())
    consumer.commit()
    consumer.close()
    assert got == 2

    found = store.broker_topics(settings, timeout_s=5.0)
    (row,) = [t for t in found["topics"] if t["name"] == settings.topic(topic)]
    assert row["partitions"] == 1 and row["messages"] == 5, found
    assert {"group": group, "lag": 3} in row["groups"]


def test_queue_length_counts_the_redis_list(settings: CommonSettings) -> None:
    queue = f"dash-q-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(settings.celery_broker_url)
    try:
        client.rpush(queue, "a", "b", "c")
        assert store.queue_length(settings, queue=queue, timeout_s=2.0) == {
            "queue": queue, "length": 3, "transport": "redis"}
    finally:
        client.delete(queue)
        client.close()


def test_queue_length_on_the_embedded_sqlalchemy_transport(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from celery import Celery

    s = CommonSettings(HOME=tmp_path)
    app = Celery("dash-test", broker=s.celery_broker_url)
    with app.connection_for_write() as conn:
        for i in range(2):
            app.send_task("dash.noop", args=[i], queue="profiler", connection=conn)
    assert store.queue_length(s, queue="profiler", timeout_s=2.0)["length"] == 2
    assert store.queue_length(s, queue="other", timeout_s=2.0)["length"] == 0
