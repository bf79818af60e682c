"""The outbox (``shared.outbox``): relays publish each event once and split the work; one relay leader
per SQLite file; a writer's direct publish never raises and leaves failures to the relay."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import outbox
from shared.broker import free_port
from shared.config import CommonSettings
from shared.db import session_scope
from shared.events import REVIEWS, ReviewEvent
from shared.models import OutboxEvent
from shared.outbox import OutboxRelay
from tests.utils.databases import temporary_database
from tests.utils.records import pending_outbox, read_topic, user_id, value


def _add_reviews(settings: CommonSettings, users: list[str]) -> list[int]:
    """One reviews.v1 outbox row per user, written in one transaction like a writer does."""
    with session_scope(settings.database_url) as s:
        return [
            outbox.add(
                s,
                topic=REVIEWS,
                key=u,
                payload=ReviewEvent(
                    user_id=u, parent_asin="B0TEST0001", timestamp=1_700_000_000_000, rating=5.0
                ).model_dump(mode="json"),
            )
            for u in users
        ]


@pytest.fixture(scope="module")
def own_db(settings: CommonSettings) -> Iterator[CommonSettings]:
    """A database of its own: a relay publishes every pending row of its database, whoever wrote it."""
    with temporary_database("recsys_outbox") as url:
        yield settings.model_copy(update={"DATABASE_URL": url})


def test_concurrent_relays_publish_each_event_once(own_db: CommonSettings) -> None:
    settings = own_db
    users = [user_id() for _ in range(300)]
    ids = _add_reviews(settings, users)
    assert len(set(ids)) == 300
    relays = [
        OutboxRelay(settings=settings, name=f"r{i}", batch=25)
        for i in range(3)
    ]
    counts = [0, 0, 0]

    def work(i: int) -> None:
        counts[i] = relays[i].drain(timeout_s=60)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in relays:
        r.stop()
    assert pending_outbox(settings, set(users)) == 0
    keys = {u.encode() for u in users}
    records = read_topic(
        settings, REVIEWS, until=lambda f: len(f) >= 300, match=lambda r: r.key in keys
    )
    assert len(records) == 300
    assert len({value(r)["event_id"] for r in records}) == 300
    assert sum(counts) == 300  # each event published once


def test_publish_sends_the_given_rows_and_leaves_failures_to_the_relay(settings: CommonSettings) -> None:
    sent, failed, other = user_id(), user_id(), user_id()
    (sent_id,) = _add_reviews(settings, [sent])
    (other_id,) = _add_reviews(settings, [other])  # not asked for: publish leaves it alone
    assert outbox.publish(settings, ids=[sent_id]) == 1
    assert pending_outbox(settings, {sent}) == 0 and pending_outbox(settings, {other}) == 1
    records = read_topic(settings, REVIEWS, until=lambda f: len(f) >= 1, match=lambda r: r.key == sent.encode())
    assert [value(r)["user_id"] for r in records] == [sent]

    down = settings.model_copy(update={"KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    (failed_id,) = _add_reviews(settings, [failed])
    assert outbox.publish(down, ids=[failed_id], flush_timeout_s=2.0) == 0  # never raises
    assert pending_outbox(settings, {failed}) == 1  # still there for the relay
    relay = OutboxRelay(settings=settings, name="relay-after-outage")
    try:
        assert relay.publish_pending(ids=[failed_id, other_id]) == 2
    finally:
        relay.stop()
    assert pending_outbox(settings, {failed, other}) == 0
    outbox.close_publishers()


def test_only_one_relay_per_sqlite_file(tmp_path: Path) -> None:
    settings = CommonSettings(HOME=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'recsys.db'}")
    a, b = OutboxRelay(settings=settings, name="a"), OutboxRelay(settings=settings, name="b")
    assert a.is_leader() is True
    assert b.is_leader() is False
    assert b.publish_pending() == 0  # standby: does not even look at the outbox
    a.stop()  # releases the lock: the standby takes over
    assert b.is_leader() is True
    b.stop()


def test_an_event_the_broker_refuses_blocks_nothing_and_nothing_is_sent_twice(own_db: CommonSettings) -> None:
    """An event larger than the producer may send, in the middle of a round: the events before it are
    marked published (not resent), the ones after it are sent, and it stays in the outbox with its error,
    left out of later rounds. Before, the round failed at it, resent the earlier events, and never got
    past it."""
    settings = own_db
    before, after = [user_id() for _ in range(10)], [user_id() for _ in range(10)]
    _add_reviews(settings, before)
    with session_scope(settings.database_url) as s:
        huge = outbox.add(s, topic=REVIEWS, key="huge", payload={"blob": "x" * 1_200_000})  # > max_request_size
    _add_reviews(settings, after)
    relay = OutboxRelay(settings=settings, name="relay-unsendable", batch=100)
    try:
        assert relay.publish_pending() == 20  # the round does not fail: one event refused, 20 acked
        assert relay.publish_pending() == 0  # and it is not retried round after round
        assert relay.drain(timeout_s=10) == 0
    finally:
        relay.stop()
    assert pending_outbox(settings, set(before + after)) == 0
    with session_scope(settings.database_url) as s:
        row = s.get(OutboxEvent, huge)
        assert row is not None and row.published_at is None  # kept, never dropped
        assert row.last_error and row.last_error.startswith("unsendable: MessageSizeTooLargeError")
    keys = {u.encode() for u in before + after}
    records = read_topic(settings, REVIEWS, until=lambda f: False, match=lambda r: r.key in keys, timeout_s=6)
    ids = [value(r)["event_id"] for r in records]
    assert len(set(ids)) == 20 and len(ids) == 20  # every event once


def test_a_round_is_bounded_so_a_crash_republishes_at_most_one_batch(own_db: CommonSettings) -> None:
    """Rows are marked published per round of at most ``batch`` events (100 by default), so a crash
    between the broker's acks and the commit resends at most that many."""
    settings = own_db
    users = [user_id() for _ in range(250)]
    _add_reviews(settings, users)
    relay = OutboxRelay(settings=settings, name="relay-bounded")
    try:
        assert relay.batch == 100
        assert [relay.publish_pending(), relay.publish_pending(), relay.publish_pending()] == [100, 100, 50]
    finally:
        relay.stop()
    assert pending_outbox(settings, set(users)) == 0
