"""Loading the raw files and the item catalogue the strategies and metrics read from."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.amazon import ItemIn, ReviewIn, item_text, iter_jsonl
from shared.logging import get_logger
from shared.popularity import item_stats
from tools.evaluation.split import Interaction

log = get_logger(__name__)


@dataclass
class LoadReport:
    """What was read, and how many lines were skipped and why (first few reasons kept)."""

    path: str
    read: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, line_no: int, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < 5:
            self.reasons.append(f"line {line_no}: {reason[:200]}")


def read_reviews(path: str | Path) -> tuple[list[ReviewIn], LoadReport]:
    """Validate every line of a reviews file (raw Amazon 2023 schema); bad lines are counted, not fatal."""
    rep = LoadReport(str(path))
    out: list[ReviewIn] = []
    for line_no, obj, err in iter_jsonl(path):
        if err is not None or obj is None:
            rep.skip(line_no, err or "empty")
            continue
        try:
            out.append(ReviewIn.model_validate(obj))
        except ValueError as e:
            rep.skip(line_no, str(e).splitlines()[0])
    rep.read = len(out)
    return out, rep


def read_items(path: str | Path) -> tuple[list[ItemIn], LoadReport]:
    """Validate every line of an item-metadata file; bad lines are counted, not fatal."""
    rep = LoadReport(str(path))
    out: list[ItemIn] = []
    for line_no, obj, err in iter_jsonl(path):
        if err is not None or obj is None:
            rep.skip(line_no, err or "empty")
            continue
        try:
            out.append(ItemIn.model_validate(obj))
        except ValueError as e:
            rep.skip(line_no, str(e).splitlines()[0])
    rep.read = len(out)
    return out, rep


@dataclass
class OfflineCatalog:
    """Every item the evaluation knows: metadata plus rating statistics.

    ``average_rating`` / ``rating_number`` follow ``shared.popularity.item_stats`` (the larger
    sample of metadata and reviews wins) over the TRAINING reviews only: held-out ones would leak.
    Items that occur in reviews but not in the metadata get an empty-title stub.
    """

    items: dict[str, ItemIn]
    average_rating: dict[str, float]
    rating_number: dict[str, int]
    asins: list[str]
    _vectors: np.ndarray | None = field(default=None, repr=False)
    _row: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, items: Iterable[ItemIn], train: Sequence[Interaction],
              extra_asins: Iterable[str] = ()) -> OfflineCatalog:
        by_asin: dict[str, ItemIn] = {}
        for it in items:
            by_asin.setdefault(it.parent_asin, it)  # first wins: deterministic on duplicates
        for asin in [*(i.parent_asin for i in train), *extra_asins]:
            if asin not in by_asin:
                by_asin[asin] = ItemIn(parent_asin=asin)
        avg: dict[str, float] = {}
        num: dict[str, int] = {}
        for asin, st in item_stats(train, list(by_asin.values())).items():
            if st.average_rating is not None:
                avg[asin] = st.average_rating
                num[asin] = st.rating_number
        asins = sorted(by_asin)
        return cls(items=by_asin, average_rating=avg, rating_number=num, asins=asins)

    def __len__(self) -> int:
        return len(self.asins)

    def title(self, asin: str) -> str:
        it = self.items.get(asin)
        return (it.title if it else "") or ""

    def features(self, asin: str) -> list[str]:
        it = self.items.get(asin)
        return list(it.features) if it else []

    def text(self, asin: str) -> str:
        it = self.items.get(asin)
        return item_text(it) if it else ""

    def card(self, asin: str) -> dict[str, object]:
        """The item as the explainer and retriever contracts describe it."""
        it = self.items.get(asin)
        return {"parent_asin": asin, "title": self.title(asin), "features": self.features(asin),
                "average_rating": self.average_rating.get(asin),
                "rating_number": self.rating_number.get(asin),
                "main_category": it.main_category if it else None}

    # -- embeddings (computed once, lazily, in catalogue order) --

    def set_vectors(self, vectors: np.ndarray) -> None:
        if vectors.shape[0] != len(self.asins):
            raise ValueError("one vector per catalogue item expected")
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._row = {a: n for n, a in enumerate(self.asins)}

    @property
    def has_vectors(self) -> bool:
        return self._vectors is not None

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            raise RuntimeError("catalogue embeddings were not computed")
        return self._vectors

    def vectors_of(self, asins: Sequence[str]) -> np.ndarray:
        rows = [self._row[a] for a in asins if a in self._row]
        return self.vectors[rows]
