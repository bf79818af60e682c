"""The gateway's database reads (sync SQLAlchemy; the service calls them in a worker thread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Item, Profile, Review

PROFILE_LISTS = ("preferred_products", "liked_features", "dislikes", "potential_interests")


@dataclass
class UserContext:
    user_id: str
    profile: dict[str, Any] | None = None  # the four lists, only for a ready profile
    summary: str | None = None
    profile_version: int = 0
    profile_status: str | None = None
    n_reviews: int = 0
    history: list[str] = field(default_factory=list)  # parent_asins, most recent first

    @property
    def has_profile(self) -> bool:
        return self.profile_status == "ready"


def load_user(url: str, *, user_id: str, history_limit: int) -> UserContext:
    ctx = UserContext(user_id=user_id)
    with session_scope(url) as s:
        prof = s.get(Profile, user_id)
        if prof is not None:
            ctx.profile_status = prof.status
            ctx.profile_version = prof.version or 0
            if prof.status == "ready":
                ctx.profile = {k: [str(x) for x in (getattr(prof, k) or [])] for k in PROFILE_LISTS}
                ctx.summary = prof.summary or None
        # One query: the most recent reviewed items (n_reviews is capped at the limit; only "any?" matters).
        rows = (
            s.execute(
                select(Review.parent_asin)
                .where(Review.user_id == user_id)
                .order_by(Review.timestamp.desc())
                .limit(max(1, history_limit))
            )
            .scalars()
            .all()
        )
        ctx.n_reviews = len(rows)
        ctx.history = list(dict.fromkeys(rows)) if history_limit else []
    return ctx


def item_facts(item: Item) -> dict[str, Any]:
    return {
        "parent_asin": item.parent_asin,
        "title": item.title or "",
        "features": list(item.features or [])[:10],
        "average_rating": item.average_rating,
        "rating_number": item.rating_number,
        "main_category": item.main_category,
    }


def items_by_asin(url: str, asins: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not asins:
        return {}
    with session_scope(url) as s:
        rows = s.execute(select(Item).where(Item.parent_asin.in_(list(asins)))).scalars()
        return {i.parent_asin: item_facts(i) for i in rows}


def popular_items(url: str, *, k: int, exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Most-rated items with a decent average (the DB-only fallback when the retriever is down)."""
    excluded = set(exclude)
    with session_scope(url) as s:
        stmt = (
            select(Item)
            .order_by(
                func.coalesce(Item.rating_number, 0).desc(),
                func.coalesce(Item.average_rating, 0).desc(),
                Item.parent_asin,
            )
            .limit(k + len(excluded))
        )
        out = []
        for item in s.execute(stmt).scalars():
            if item.parent_asin not in excluded:
                out.append(item_facts(item))
            if len(out) >= k:
                break
        return out


def user_history(url: str, *, user_id: str, limit: int) -> list[dict[str, Any]]:
    """The user's reviews, most recent first, with the item title (demo and compare)."""
    with session_scope(url) as s:
        rows = s.execute(
            select(Review.parent_asin, Review.rating, Review.title, Review.timestamp, Item.title)
            .join(Item, Item.parent_asin == Review.parent_asin, isouter=True)
            .where(Review.user_id == user_id)
            .order_by(Review.timestamp.desc())
            .limit(limit)
        ).all()
    return [
        {"parent_asin": a, "rating": r, "review_title": rt, "timestamp": ts, "item_title": it or ""}
        for a, r, rt, ts, it in rows
    ]


def get_profile(url: str, *, user_id: str) -> dict[str, Any] | None:
    with session_scope(url) as s:
        prof = s.get(Profile, user_id)
        if prof is None:
            return None
        return {
            "user_id": prof.user_id,
            "version": prof.version,
            "status": prof.status,
            "source": prof.source,
            **{k: list(getattr(prof, k) or []) for k in PROFILE_LISTS},
            "summary": prof.summary,
            "summary_source": prof.summary_source,
            "model_name": prof.model_name,
            "n_reviews": prof.n_reviews,
            "has_embedding": prof.embedding is not None,
            "updated_at": prof.updated_at.isoformat() if prof.updated_at else None,
        }
