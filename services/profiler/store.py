"""Everything the profiler reads from and writes to the database: reviews, item titles, profiles, outbox.

Every function takes the caller's session, so one unit of work (read a batch's state, or write a
batch's profiles with their events) is one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.profiler.profiles import ProfileResult
from shared import outbox
from shared.embeddings import to_bytes
from shared.events import PROFILES, ProfileEvent
from shared.models import Item, Profile, Review, utcnow


def recent_reviews(session: Session, *, user_ids: Sequence[str], per_user: int) -> dict[str, list[dict[str, Any]]]:
    """Each user's newest ``per_user`` reviews (dicts with the fields a history is built from)."""
    rows = session.execute(
        select(Review.user_id, Review.parent_asin, Review.timestamp, Review.rating, Review.title, Review.text)
        .where(Review.user_id.in_(list(user_ids)))
        .order_by(Review.user_id, Review.timestamp.desc())
    ).all()
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if len(by_user[r.user_id]) < per_user:
            by_user[r.user_id].append(r._asdict())
    return dict(by_user)


def item_titles(session: Session, *, asins: Collection[str]) -> dict[str, str]:
    """``{parent_asin: title}`` of the catalog items among ``asins``."""
    if not asins:
        return {}
    rows = session.execute(select(Item.parent_asin, Item.title).where(Item.parent_asin.in_(list(asins)))).all()
    return {asin: title or "" for asin, title in rows}


def profiles_by_user(session: Session, *, user_ids: Sequence[str]) -> dict[str, Profile]:
    """The stored profiles of ``user_ids`` (those that have one)."""
    return {p.user_id: p for p in session.scalars(select(Profile).where(Profile.user_id.in_(list(user_ids))))}


def ready_user_ids(session: Session, *, user_ids: Sequence[str]) -> set[str]:
    """The users among ``user_ids`` whose stored profile is ``ready``."""
    return set(
        session.scalars(
            select(Profile.user_id).where(Profile.user_id.in_(list(user_ids)), Profile.status == "ready")
        )
    )


def upsert_profile(
    session: Session, *, result: ProfileResult, vector: np.ndarray | None, dislike: np.ndarray | None = None
) -> tuple[Profile, int]:
    """Write the profile row (version bumped, with its profile and dislikes vectors) and its
    ``profiles.v1`` outbox event; returns (row, outbox id)."""
    q = select(Profile).where(Profile.user_id == result.user_id)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()  # two jobs for one user serialise on the row: versions never collide
    row = session.scalars(q).one_or_none()
    if row is None:
        row = Profile(user_id=result.user_id, version=0, created_at=utcnow())
        session.add(row)
    row.version = (row.version or 0) + 1
    row.status = result.status
    row.source = result.source
    row.summary_source = result.summary_source
    for name, terms in result.profile.to_dict().items():
        setattr(row, name, terms)
    row.summary = result.summary
    row.embedding = to_bytes(vector) if vector is not None else None
    row.dislike_embedding = to_bytes(dislike) if dislike is not None else None
    row.model_name = result.model_name
    row.prompt_version = result.prompt_version
    row.n_reviews = result.n_reviews
    row.last_review_ts = result.last_review_ts
    row.error = result.error
    row.updated_at = utcnow()
    session.flush()
    event = ProfileEvent(
        user_id=row.user_id,
        version=row.version,
        status=row.status,
        source=row.source,
        embedding=[float(x) for x in vector] if vector is not None else None,
    )
    outbox_id = outbox.add(session, topic=PROFILES, key=row.user_id, payload=event.model_dump(mode="json"))
    return row, outbox_id
