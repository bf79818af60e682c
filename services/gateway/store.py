"""The gateway's database reads (sync SQLAlchemy; the service calls them in a worker thread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select

from shared.db import read_connection, session_scope
from shared.models import Explanation, Item, Profile, Review, StoredRerank
from shared.popularity import item_stats, pick_popular, rank_popular

PROFILE_LISTS = ("preferred_products", "liked_features", "dislikes", "potential_interests")


@dataclass
class UserRecord:
    """What one request knows about its user: profile fields and the most recent reviews."""

    user_id: str
    profile: dict[str, Any] | None = None  # the four lists, only for a ready profile
    summary: str | None = None
    profile_version: int = 0
    profile_status: str | None = None
    n_reviews: int = 0
    history: list[str] = field(default_factory=list)  # parent_asins, most recent first
    newest_ts: int | None = None  # timestamp of the most recent review
    reviews: list[tuple[str, float, int]] = field(default_factory=list)  # (asin, rating, ts), newest first

    @property
    def stamp(self) -> str:
        """Changes whenever the profile or the review history does (a new review is a newer one)."""
        newest = self.history[0] if self.history else ""
        return f"{self.profile_status}:{self.profile_version}:{self.n_reviews}:{self.newest_ts}:{newest}"

    @property
    def has_profile(self) -> bool:
        return self.profile_status == "ready"


_profiles, _reviews = Profile.__table__.c, Review.__table__.c
# Built once: statement construction and cache-key generation cost more than the reads themselves.
_PROFILE_READ = select(
    _profiles.status, _profiles.version, _profiles.summary, *(_profiles[k] for k in PROFILE_LISTS)
).where(_profiles.user_id == bindparam("user_id"))
_HISTORY_READ = (
    select(_reviews.parent_asin, _reviews.timestamp, _reviews.rating)
    .where(_reviews.user_id == bindparam("user_id"))
    .order_by(_reviews.timestamp.desc())
    .limit(bindparam("limit"))
)


def load_user(url: str, *, user_id: str, history_limit: int) -> UserRecord:
    """Profile fields and the most recent reviewed items: two indexed reads on one Core connection."""
    ctx = UserRecord(user_id=user_id)
    with read_connection(url) as conn:
        prof = conn.execute(_PROFILE_READ, {"user_id": user_id}).first()
        # n_reviews is capped at the limit: only "any?" and the stamp need it.
        rows = conn.execute(_HISTORY_READ, {"user_id": user_id, "limit": max(1, history_limit)}).all()
    if prof is not None:
        status, version, summary, *lists = prof
        ctx.profile_status = status
        ctx.profile_version = version or 0
        if status == "ready":
            ctx.profile = {k: [str(x) for x in (v or [])] for k, v in zip(PROFILE_LISTS, lists, strict=True)}
            ctx.summary = summary or None
    ctx.n_reviews = len(rows)
    ctx.newest_ts = int(rows[0][1]) if rows else None
    ctx.history = list(dict.fromkeys(a for a, _, _ in rows)) if history_limit else []
    ctx.reviews = [(a, float(r), int(t)) for a, t, r in rows] if history_limit else []
    return ctx


def item_facts(item: Any) -> dict[str, Any]:
    """Display facts of an Item (or a row with the same columns)."""
    return {
        "parent_asin": item.parent_asin,
        "title": item.title or "",
        "features": list(item.features or [])[:10],
        "average_rating": item.average_rating,
        "rating_number": item.rating_number,
        "main_category": item.main_category,
    }


_items = Item.__table__.c
_FACTS_READ = select(
    _items.parent_asin,
    _items.title,
    _items.features,
    _items.average_rating,
    _items.rating_number,
    _items.main_category,
).where(_items.parent_asin.in_(bindparam("asins", expanding=True)))


def items_by_asin(url: str, asins: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not asins:
        return {}
    with read_connection(url) as conn:
        rows = conn.execute(_FACTS_READ, {"asins": list(asins)})
        return {r.parent_asin: item_facts(r) for r in rows}


def popular_items(
    url: str, *, user_id: str | None, k: int, exclude: Sequence[str] = (), tier: int, prior_count: float,
    pool: int = 500,
) -> list[dict[str, Any]]:
    """The one "popular" (``shared.popularity``: Bayesian average, per-user shuffle of the top tier,
    categories in turn) over the catalog's own figures of its most-rated items: the DB-only fallback
    when the retriever is down. The retriever also counts the ingested reviews; this reads only the
    items table, so the two agree where the catalog's figures are complete."""
    with session_scope(url) as s:
        stmt = (
            select(Item)
            .order_by(func.coalesce(Item.rating_number, 0).desc(), Item.parent_asin)
            .limit(pool + len(exclude))
        )
        facts = [item_facts(item) for item in s.execute(stmt).scalars()]
    stats = item_stats((), facts, prior_count=prior_count)
    for f in facts:
        f["score"] = stats[f["parent_asin"]].bayes_score
    return pick_popular(rank_popular(facts), user_id=user_id, k=k, exclude=set(exclude), tier=tier)


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


_explanations = Explanation.__table__.c
_reranks = StoredRerank.__table__.c
WRITES_BATCH = 5_000


def llm_writes_since(url: str, last: tuple[int, int] | None) -> tuple[set[str], tuple[int, int]]:
    """(users with LLM reasons or an llm_only re-rank written since ``last``, the new marks): ids of the
    ``explanations`` and ``reranks`` tables, which the explainer worker only appends to. ``last=None``:
    no users, only the marks to start from (what was written before the gateway started is read by
    the answers it computes anyway)."""
    users: set[str] = set()
    marks: list[int] = []
    with read_connection(url) as conn:
        for n, cols in enumerate((_explanations, _reranks)):
            if last is None:
                marks.append(int(conn.execute(select(func.coalesce(func.max(cols.id), 0))).scalar_one()))
                continue
            rows = conn.execute(select(cols.id, cols.user_id).where(cols.id > last[n])
                                .order_by(cols.id).limit(WRITES_BATCH)).all()
            users.update(str(u) for _, u in rows)
            marks.append(int(rows[-1][0]) if rows else last[n])
    return users, (marks[0], marks[1])
