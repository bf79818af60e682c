"""shared.kafka: the consumer loop on the real broker."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson

from shared.config import CommonSettings
from shared.events import dead_letter_topic
from shared.kafka import ConsumerLoop, decode_value, ensure_topics, make_producer, transient_error
from tests.utils.records import read_topic, value


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


def _produce_values(settings: CommonSettings, topic: str, values: list[dict[str, object]], *,
                    partitions: int = 1) -> None:
    ensure_topics(settings, [topic, dead_letter_topic(topic)], partitions=partitions)
    producer = make_producer(settings)
    for v in values:
        producer.send(topic, key=str(v["key"]), value=v)
    producer.flush()
    producer.close()


def _run_until(loop: ConsumerLoop, done: Callable[[], bool], timeout_s: float = 60) -> None:
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.stop()
    t.join(timeout=30)
    assert not t.is_alive()


def test_a_poison_record_goes_to_the_dead_letter_topic_and_blocks_nothing(settings: CommonSettings,
                                                                         unique: str) -> None:
    """A record the handler can never process: bounded retries, then the DLQ with the error and the
    consumer group; every good record (before it, after it, on other partitions) is handled; the offsets
    move past it, so a restart does not see it again."""
    topic = f"poison-{unique}"
    values: list[dict[str, object]] = [{"key": f"k{i % 4}", "i": i} for i in range(12)]
    values.insert(5, {"key": "k1", "i": -1, "poison": True})
    _produce_values(settings, topic, values, partitions=3)
    handled: set[int] = set()
    calls = {"n": 0}

    def handler(records):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        docs = [decode_value(r) for r in records]
        if any(d.get("poison") for d in docs):
            raise KeyError("field 'price' missing")  # a bug the record triggers every time
        handled.update(int(d["i"]) for d in docs)

    group = f"g-{unique}"
    loop = ConsumerLoop(settings=settings, topics=[topic], group_id=group, handler=handler,
                        retry_backoff_s=0.05, max_attempts=3)
    before = _metric("recsys_consumer_dead_letters_total", consumer="poison-test", topic=topic)
    loop.name = "poison-test"
    _run_until(loop, lambda: len(handled) == 12)
    assert handled == set(range(12))
    letters = read_topic(settings, dead_letter_topic(topic), until=lambda f: len(f) >= 1, timeout_s=20)
    assert len(letters) == 1
    letter = value(letters[0])
    assert letter["source_topic"] == topic and letter["consumer"] == group
    assert "KeyError" in letter["error"] and "price" in letter["error"]
    assert orjson.loads(letter["raw"])["poison"] is True
    assert _metric("recsys_consumer_dead_letters_total", consumer="poison-test", topic=topic) == before + 1

    # Offsets moved past it: the same group sees nothing again.
    replayed: list[int] = []
    again = ConsumerLoop(settings=settings, topics=[topic], group_id=group,
                         handler=lambda recs: replayed.extend(decode_value(r)["i"] for r in recs))
    timer = threading.Timer(12, again.stop)
    timer.start()
    again.run()
    timer.cancel()
    assert replayed == []


def test_a_dependency_outage_is_retried_and_never_dead_letters(settings: CommonSettings, unique: str) -> None:
    """The database down for longer than max_attempts: records are retried until it is back, none to the DLQ."""
    from sqlalchemy.exc import OperationalError

    topic = f"outage-{unique}"
    _produce_values(settings, topic, [{"key": "k", "i": i} for i in range(3)])
    failures = {"left": 6}
    handled: list[int] = []

    def handler(records):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        handled.extend(decode_value(r)["i"] for r in records)

    loop = ConsumerLoop(settings=settings, topics=[topic], group_id=f"g-{unique}", handler=handler,
                        retry_backoff_s=0.05, retry_backoff_max_s=0.2, max_attempts=2)
    _run_until(loop, lambda: len(handled) >= 3)
    assert sorted(handled) == [0, 1, 2] and failures["left"] == 0
    letters = read_topic(settings, dead_letter_topic(topic), until=lambda f: False, timeout_s=4)
    assert letters == []


def test_transient_errors_are_told_apart_from_bad_records() -> None:
    import httpx
    from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
    from sqlalchemy.exc import DataError, OperationalError

    assert transient_error(OperationalError("x", {}, Exception()))
    assert transient_error(KafkaTimeoutError()) and transient_error(httpx.ConnectError("refused"))
    assert transient_error(ConnectionRefusedError())
    assert not transient_error(DataError("x", {}, Exception()))  # value too long for a column: the record
    assert not transient_error(MessageSizeTooLargeError()) and not transient_error(KeyError("price"))


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_event_listener_sees_events_after_it_started_and_outlives_a_broker_outage(settings: CommonSettings,
                                                                                unique: str) -> None:
    """EventListener: from the latest offset (an event from before it started is not replayed), the
    handler gets what is sent after; against an unreachable broker it keeps retrying and stops on ask."""
    from shared.kafka import EventListener

    topic = f"listen-{unique}"
    ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    producer.send(topic, key="k", value={"i": -1})  # before the listener: never seen
    producer.flush()
    seen: list[int] = []
    got = threading.Event()

    def handler(records):  # type: ignore[no-untyped-def]
        seen.extend(decode_value(r)["i"] for r in records)
        if 2 in seen:
            got.set()

    listener = EventListener(settings, topics=[topic], group_id=f"listen-{unique}", handler=handler,
                             name="test-listener", retry_s=0.2).start()
    try:
        deadline = time.monotonic() + 60
        while not got.is_set() and time.monotonic() < deadline:  # sent until its assignment has begun
            producer.send(topic, key="k", value={"i": 2 if seen else 1})
            producer.flush()
            got.wait(1.0)
    finally:
        listener.stop()
        producer.close()
    assert got.is_set() and -1 not in seen

    down = settings.model_copy(update={"KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    failing = EventListener(down, topics=[topic], group_id=f"down-{unique}", handler=handler,
                            name="down-listener", retry_s=0.1, bootstrap_timeout_s=1.0).start()
    time.sleep(1.0)
    assert failing._thread.is_alive()  # retrying, not dead
    started = time.monotonic()
    failing.stop(timeout_s=2)  # a consumer still being built cannot be interrupted: stop never waits long
    assert time.monotonic() - started < 5
    failing._thread.join(timeout=10)  # the thread ends once that attempt gives up: no retry after stop
    assert not failing._thread.is_alive()
