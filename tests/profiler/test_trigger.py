"""The trigger: per-user debounce (pure, fake clock) and a burst through a real broker into real Redis."""

from __future__ import annotations

import json
import threading
import time

import redis
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition

from services.profiler.trigger import Debouncer, make_trigger
from shared.events import REVIEWS, ReviewEvent
from shared.kafka import ensure_topics, make_producer


def _record(user: str, offset: int, partition: int = 0) -> ConsumerRecord:
    value = ReviewEvent(
        user_id=user, parent_asin="A", timestamp=1_700_000_000_000 + offset, rating=5
    ).model_dump()
    return _raw(offset, json.dumps(value).encode(), partition=partition)


def _raw(offset: int, value: bytes, *, partition: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        topic="reviews.v1",
        partition=partition,
        leader_epoch=None,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        headers=[],
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        serialized_header_size=0,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_debounce_groups_a_burst_and_holds_offsets_until_queued() -> None:
    clock, jobs = Clock(), []
    deb = Debouncer(enqueue=jobs.append, debounce_s=2.0, max_wait_s=30.0, users_per_task=8, clock=clock)
    tp = TopicPartition("reviews.v1", 0)
    for i in range(20):
        deb.add([_record("alice", i)])
        clock.now += 0.05
    deb.add([_record("bob", 20), _record("garbage-free", 21)])
    assert deb.flush(False) == {tp: 0}  # alice's first record is still waiting: nothing past it is safe
    clock.now += 2.5
    assert deb.flush(False) == {tp: 22} and jobs == [["alice", "bob", "garbage-free"]]
    assert deb.waiting == 0


def test_a_user_who_keeps_reviewing_is_queued_at_max_wait_and_bad_records_are_skipped() -> None:
    clock, jobs = Clock(), []
    deb = Debouncer(enqueue=jobs.append, debounce_s=2.0, max_wait_s=5.0, users_per_task=1, clock=clock)
    bad = _raw(0, b"not json")
    deb.add([bad])
    for i in range(1, 7):
        deb.add([_record("busy", i)])
        clock.now += 1.0
        deb.flush(False)
    assert jobs == [["busy"]]


def test_failed_enqueue_keeps_users_waiting_and_offsets_uncommitted() -> None:
    def down(_users: list[str]) -> None:
        raise ConnectionError("redis down")

    deb = Debouncer(enqueue=down, debounce_s=0.0)
    deb.add([_record("carol", 7)])
    try:
        deb.flush(True)
    except ConnectionError:
        pass
    assert deb.waiting == 1
    deb.enqueue = lambda users: None
    assert deb.flush(True) == {TopicPartition("reviews.v1", 0): 8}


def test_burst_of_20_reviews_makes_one_or_two_jobs_in_redis(psettings, unique) -> None:
    # A topic prefix of its own: a new consumer group reads the topic from the start, so the profiler
    # tests' shared prefix would hand it the other tests' review events too.
    s = psettings.model_copy(
        update={"PROFILER_QUEUE": f"burst-{unique}", "PROFILER_GROUP": f"burst-{unique}",
                "TOPIC_PREFIX": f"burst{unique}."}
    )
    ensure_topics(s, [REVIEWS])
    loop, deb = make_trigger(s)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    r = redis.Redis.from_url(s.celery_broker_url)
    try:
        producer = make_producer(s)
        user = f"burst-{unique}"
        for i in range(20):
            event = ReviewEvent(user_id=user, parent_asin=f"A{i}", timestamp=1_700_000_000_000 + i, rating=4)
            producer.send(s.topic(REVIEWS), key=user, value=event.model_dump())
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not r.llen(s.PROFILER_QUEUE):
            time.sleep(0.2)
        time.sleep(s.PROFILER_DEBOUNCE_S * 2)  # any straggler job would have been queued by now
        jobs = [json.loads(m) for m in r.lrange(s.PROFILER_QUEUE, 0, -1)]
        assert 1 <= len(jobs) <= 2
        users = [u for job in jobs for u in json.loads(__import__("base64").b64decode(job["body"]))[0][0]]
        assert set(users) == {user}
        assert deb.waiting == 0
    finally:
        loop.stop()
        thread.join(timeout=30)
        r.delete(s.PROFILER_QUEUE)
    assert not thread.is_alive()
