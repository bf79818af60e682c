"""Streaming ingestion: raw topic → same validation/storage → DB; bad records → DLQ with the reason."""

from __future__ import annotations

import threading
import time

import orjson
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from sqlalchemy import select

from services.ingest.config import IngestSettings
from services.ingest.raw_consumer import make_loop
from shared.db import session_scope
from shared.events import ITEMS_RAW, REVIEWS_DLQ, REVIEWS_RAW
from shared.kafka import _common, ensure_topics, make_producer
from shared.models import Item, Review
from tests.utils.records import item, read_topic, review, user_id, value


def test_raw_topic_stores_valid_and_dead_letters_invalid(
    ingest_settings: IngestSettings, unique: str
) -> None:
    ensure_topics(ingest_settings, [REVIEWS_RAW, ITEMS_RAW, REVIEWS_DLQ])
    user = user_id()
    good = review(user_id=user)
    bad = review(user_id=user, rating=9, timestamp=good["timestamp"] + 1)
    it = item()
    producer = make_producer(ingest_settings, value_serializer=None, key_serializer=None)
    sent = [
        producer.send(REVIEWS_RAW, key=user.encode(), value=orjson.dumps(good)),
        producer.send(REVIEWS_RAW, key=user.encode(), value=orjson.dumps(bad)),
        producer.send(REVIEWS_RAW, key=user.encode(), value=b"\xff not json at all"),
    ]
    producer.send(ITEMS_RAW, key=it["parent_asin"].encode(), value=orjson.dumps(it))
    producer.flush(timeout=30)
    producer.close()
    last = max((f.get(timeout=10) for f in sent), key=lambda m: m.offset)
    tp = TopicPartition(REVIEWS_RAW, last.partition)

    group = f"ingest-raw-test-{unique}"
    loop, handler = make_loop(ingest_settings, group_id=group)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        stored: list[Review] = []
        while time.monotonic() < deadline:
            with session_scope(ingest_settings.database_url) as s:
                stored = list(s.scalars(select(Review).where(Review.user_id == user)))
                has_item = s.get(Item, it["parent_asin"]) is not None
            if stored and has_item:
                break
            time.sleep(0.3)
        assert [r.timestamp for r in stored] == [good["timestamp"]]
        assert has_item

        letters = read_topic(
            ingest_settings, REVIEWS_DLQ, until=lambda f: len(f) >= 2, match=lambda r: r.key == user.encode()
        )
        assert len(letters) == 2
        by_reason = {value(r)["error"]: value(r) for r in letters}
        validation = next(v for k, v in by_reason.items() if k.startswith("validation failed"))
        assert "rating" in validation["error"]
        assert validation["errors"][0]["field"] == "rating"
        assert validation["source_topic"] == REVIEWS_RAW
        assert orjson.loads(validation["raw"])["rating"] == 9
        garbage = next(v for k, v in by_reason.items() if k.startswith("not valid JSON"))
        assert garbage["offset"] >= 0

        # Offsets were committed only after the handler returned: the group is past our records.
        deadline = time.monotonic() + 20
        committed = None
        while time.monotonic() < deadline:
            probe = KafkaConsumer(**_common(ingest_settings), group_id=group, enable_auto_commit=False)
            committed = probe.committed(tp)
            probe.close()
            if committed is not None and committed > last.offset:
                break
            time.sleep(0.5)
        assert committed is not None and committed > last.offset
    finally:
        loop.stop()
        thread.join(timeout=30)
        handler.close()
