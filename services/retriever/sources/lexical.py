"""Lexical content neighbours: TF-IDF over each item's text, against a recency-weighted user vector.

The item text is ``shared.amazon.item_text`` with the store and without the category (title +
features + description + store + details; a category that most items share is no description). It is
tokenized with the project's tokenizer, stop words and stemmer (``shared.text``) and weighted by
scikit-learn's ``TfidfVectorizer`` (sublinear tf, smooth idf, l2 rows). The user vector is the sum of
their last ``history_length`` items' rows weighted ``decay ** steps_from_end``; an item's score is its
cosine with that vector. Items without text have an empty row and score nothing, so on a catalogue
without text this source is silent and the collaborative sources carry the user. Content reaches items
nobody has reviewed yet, which is what carries sparse catalogues.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from services.retriever.sources.base import (
    ItemIndex,
    ScoredSource,
    recent_rows,
    weighted_rows,
)
from shared.amazon import item_text
from shared.records import get_field
from shared.text import is_content, stem, strip_markup, tokens

MAX_CHARS = 5_000


def analyze(text: str) -> list[str]:
    """The project's content stems (``shared.text``): what TF-IDF counts."""
    return [stem(t) for t in tokens(text) if is_content(t)]


def lexical_text(item: Any, *, category: bool = False) -> str:
    """The text this source indexes for one item (empty when it has none)."""
    return item_text(item, max_chars=MAX_CHARS, store=True, category=category)


class LexicalSource(ScoredSource):
    """``lexical``: items whose words match the words of the user's recent items."""

    name = "lexical"

    def __init__(self, *, decay: float = 1.0, history_length: int = 50, max_df: float = 0.95,
                 category: bool = False) -> None:
        self.decay = decay
        self.history_length = history_length
        self.max_df = max_df
        self.category = category
        self.index = ItemIndex(())
        self.matrix: sp.csr_matrix | None = None

    def fit(self, *, interactions: Sequence[Any], items: Iterable[Any] = ()) -> None:
        docs: dict[str, str] = {}
        for it in items:
            asin = get_field(it, "parent_asin")
            if asin is not None:
                docs.setdefault(str(asin), lexical_text(it, category=self.category))
        for r in interactions:  # reviewed items without metadata: known, without text
            docs.setdefault(str(get_field(r, "parent_asin")), "")
        self._fit_docs(docs)

    def _fit_docs(self, docs: dict[str, str]) -> None:
        self.index = ItemIndex(docs)
        texts = [docs[a] for a in self.index.asins]
        self.matrix = None
        if not any(texts):
            return
        vectorizer = TfidfVectorizer(analyzer=analyze, sublinear_tf=True, max_df=self.max_df, min_df=1)
        try:
            self.matrix = sp.csr_matrix(vectorizer.fit_transform(texts))
        except ValueError:  # empty vocabulary: only stop words, or one word every item shares
            self.matrix = None

    def scores(self, history: Sequence[str]) -> np.ndarray | None:
        if self.matrix is None:
            return None
        rows, weights = recent_rows(self.index, history, length=self.history_length, decay=self.decay)
        if not rows:
            return None
        user = weighted_rows(self.matrix, rows, weights)
        norm = float(np.linalg.norm(user))
        if norm == 0.0:
            return None
        return np.asarray(self.matrix @ (user / norm)).ravel()


#: characters of one review that count towards its item's document (title + text)
REVIEW_CHARS = 1_000


def review_text(record: Any) -> str:
    """What one review says about its item: its title and text, without markup, clipped."""
    title = get_field(record, "title", "") or ""
    text = get_field(record, "text", "") or ""
    joined = f"{title}. {text}" if title and text else (title or text)
    return strip_markup(str(joined))[:REVIEW_CHARS] if joined else ""


class ReviewTextSource(LexicalSource):
    """``reviews``: items their reviewers describe in the words the user's recent items are described in.

    The same TF-IDF as :class:`LexicalSource`, over another document per item: the titles and texts
    of the reviews in the fitted interactions (newest first, up to ``MAX_CHARS``), so it describes
    items whose metadata is thin or missing (the 2018 magazines: 43 of 151 items without a title) in
    their readers' words. Only the interactions it is fitted on count: a held-out review's text is not
    part of any document. Without review text (interaction logs without text) it is silent."""

    name = "reviews"

    def fit(self, *, interactions: Sequence[Any], items: Iterable[Any] = ()) -> None:
        by_item: dict[str, list[tuple[int, str]]] = {}
        for r in interactions:
            by_item.setdefault(str(get_field(r, "parent_asin")), []).append(
                (int(get_field(r, "timestamp", 0) or 0), review_text(r)))
        docs: dict[str, str] = {}
        for asin, reviews in by_item.items():
            parts, size = [], 0
            for _, text in sorted(reviews, key=lambda x: (-x[0], x[1])):  # newest first, ties by text
                if text and size < MAX_CHARS:
                    parts.append(text)
                    size += len(text) + 1
            docs[asin] = " ".join(parts)[:MAX_CHARS]
        self._fit_docs(docs)
