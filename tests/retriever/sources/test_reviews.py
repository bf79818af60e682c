"""Review text: TF-IDF over what reviewers wrote about each item, for items whose metadata says nothing."""
from __future__ import annotations

import random

from services.retriever.ranking.core import default_factories
from services.retriever.sources import CandidateSource
from services.retriever.sources.lexical import REVIEW_CHARS, ReviewTextSource, review_text
from tools.evaluation.split import Interaction

T0 = 1_600_000_000_000
DAY = 86_400_000
TOPICS = {
    "F": "glossy fashion spreads, runway trends and beauty tips every month",
    "C": "cycling routes, bike maintenance and mountain trail reviews",
    "K": "easy weeknight recipes, baking tips and kitchen gadget tests",
}


def planted_log(seed: int = 1) -> list[Interaction]:
    """Items F0-F5, C0-C5, K0-K5 without any metadata; every review of an item speaks of its topic,
    and each reviewer reads across topics at random, so co-review says nothing of the topics."""
    rng = random.Random(seed)
    items = [f"{t}{n}" for t in TOPICS for n in range(6)]
    out = []
    for u in range(60):
        for n, asin in enumerate(rng.sample(items, 4)):
            words = TOPICS[asin[0]].split()
            text = " ".join(rng.sample(words, 6))
            out.append(Interaction(user_id=f"u{u:02d}", parent_asin=asin, rating=5.0, timestamp=T0 + n * DAY,
                                   title=f"Review of issue {n}", text=text))
    return out


def test_is_a_candidate_source_of_the_core() -> None:
    assert isinstance(ReviewTextSource(), CandidateSource)
    assert ReviewTextSource.name == "reviews" and "reviews" in default_factories()


def test_items_described_alike_by_their_reviewers_are_neighbours() -> None:
    source = ReviewTextSource()
    source.fit(interactions=planted_log(), items=[])  # no item metadata at all
    for topic in TOPICS:
        history = [f"{topic}0", f"{topic}1"]
        top = [a for a, _ in source.candidates(history=history, k=4, exclude=set(history))]
        assert len(top) == 4 and all(a[0] == topic for a in top), (topic, top)


def test_a_held_out_review_is_part_of_no_document() -> None:
    """Only the fitted interactions describe items: an item whose one review is held out has no
    words, so it is never a candidate (validation targets' own reviews cannot leak into the fit)."""
    log = planted_log()
    held = Interaction(user_id="late", parent_asin="NEW", rating=5.0, timestamp=T0, text=TOPICS["F"])
    source = ReviewTextSource()
    source.fit(interactions=log, items=[])
    assert "NEW" not in source.index.row
    source.fit(interactions=[*log, Interaction(user_id="x", parent_asin="NEW", rating=5.0, timestamp=T0)], items=[])
    assert "NEW" in source.index.row  # known, but without words: scores nothing
    assert all(a != "NEW" for a, _ in source.candidates(history=["F0", "F1"], k=30, exclude={"F0", "F1"}))
    source.fit(interactions=[*log, held], items=[])
    assert "NEW" in [a for a, _ in source.candidates(history=["F0", "F1"], k=8, exclude={"F0", "F1"})]


def test_without_review_text_it_is_silent() -> None:
    bare = [Interaction(user_id=r.user_id, parent_asin=r.parent_asin, rating=r.rating, timestamp=r.timestamp)
            for r in planted_log()]
    source = ReviewTextSource()
    source.fit(interactions=bare, items=[])
    assert source.candidates(history=["F0"], k=5, exclude={"F0"}) == []


def test_review_text_drops_markup_and_is_clipped() -> None:
    r = Interaction(user_id="u", parent_asin="A", rating=4.0, timestamp=T0, title="<b>Great</b>",
                    text="<script>alert(1)</script>Lovely " + "word " * 500)
    text = review_text(r)
    assert "<" not in text and "script" not in text.lower() and "alert" not in text and text.startswith("Great")
    assert len(text) == REVIEW_CHARS
