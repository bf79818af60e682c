"""services.gateway.store on the seeded PostgreSQL: the DB-only popular fallback is the shared "popular"."""

from __future__ import annotations

from services.gateway.store import popular_items
from tests.utils.gateway import Seeded


def _popular(url: str, user: str | None, exclude: list[str] | None = None, k: int = 3) -> list[dict]:
    return popular_items(url, user_id=user, k=k, exclude=exclude or [], tier=10, prior_count=10.0)


def test_db_popular_fallback_is_per_user_stable_diverse_and_excludes(pg_url: str, seeded: Seeded) -> None:
    first = _popular(pg_url, "UA")
    assert len(first) == 3 and all(isinstance(i["score"], float) for i in first)
    assert _popular(pg_url, "UA") == first  # the same user gets the same list in every process
    lists = {tuple(i["parent_asin"] for i in _popular(pg_url, f"U{n}")) for n in range(6)}
    assert len(lists) > 1  # the top tier is shuffled per user, as the retriever's cold start does
    # Scores are Bayesian averages of the catalog's figures (the seeded averages are 4.0 to 4.9).
    assert all(4.0 <= i["score"] <= 4.9 for i in first)
    # Categories alternate, so one category cannot fill the list.
    cats = [i["main_category"] for i in first]
    assert all(a != b for a, b in zip(cats, cats[1:], strict=False))
    excluded = [i["parent_asin"] for i in first[:2]]  # the tier moves down past them
    assert not {i["parent_asin"] for i in _popular(pg_url, "UA", excluded)} & set(excluded)
    assert len(_popular(pg_url, "UA", excluded)) == 3
