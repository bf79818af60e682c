"""shared.kafka: the consumer loop on the real broker."""
from __future__ import annotations

import threading
import time

from shared.config import CommonSettings
from shared.kafka import ConsumerLoop, decode_value, ensure_topics, make_producer


def test_consumer_loop_retries_a_failed_batch_and_commits_after_success(settings: CommonSettings,
                                                                       unique: str) -> None:
    topic = f"core-{unique}"
    ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    for i in range(3):
        producer.send(topic, key="k", value={"i": i})
    producer.flush()
    producer.close()

    seen: list[int] = []
    failures = {"left": 1}

    def handler(records):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("downstream unavailable")
        seen.extend(decode_value(r)["i"] for r in records)
        if len(seen) >= 3:
            loop.stop()

    loop = ConsumerLoop(settings=settings, topics=[topic], group_id=f"g-{unique}", handler=handler,
                        retry_backoff_s=0.2)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    assert seen == [0, 1, 2]  # the failed batch was redelivered, nothing lost, nothing doubled

    # A new consumer in the same group starts after the committed offsets: nothing is replayed.
    replayed: list[int] = []
    loop2 = ConsumerLoop(settings=settings, topics=[topic], group_id=f"g-{unique}",
                         handler=lambda recs: replayed.extend(decode_value(r)["i"] for r in recs),
                         idle_callback=None)
    timer = threading.Timer(12, loop2.stop)
    timer.start()
    loop2.run()
    timer.cancel()
    assert replayed == []


def test_consumer_loop_survives_a_batch_slower_than_max_poll_interval(settings: CommonSettings,
                                                                     unique: str) -> None:
    """A handler that outlives max_poll_interval_ms gets its commit refused by the group: the loop keeps
    running, rejoins, and the batch is delivered again (handlers are idempotent)."""
    topic = f"slow-{unique}"
    ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    for i in range(2):
        producer.send(topic, key="k", value={"i": i})
    producer.flush()
    producer.close()
    fast = settings.model_copy(update={"KAFKA_MAX_POLL_INTERVAL_MS": 3_000, "KAFKA_SESSION_TIMEOUT_MS": 3_000})
    calls: list[list[int]] = []

    def handler(records):  # type: ignore[no-untyped-def]
        calls.append([decode_value(r)["i"] for r in records])
        if len(calls) == 1:
            time.sleep(6)  # twice the poll interval: the group evicts this member meanwhile
        else:
            loop.stop()

    loop = ConsumerLoop(settings=fast, topics=[topic], group_id=f"g-{unique}", handler=handler)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    t.join(timeout=90)
    assert not t.is_alive(), "the loop did not come back to the redelivered batch"
    assert len(calls) >= 2 and calls[0] == [0, 1] and calls[1][0] == 0  # redelivered from the start
