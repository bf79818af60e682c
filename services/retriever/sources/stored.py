"""Sources built from the training job's stored neighbour lists instead of fitted here.

:func:`load_into` takes a freshly constructed source (as a factory makes it) and, when the stored
lists (:class:`shared.neighbours.StoredNeighbours`) hold what that source would fit, loads its
matrices from them: co-review with the same number of neighbours, transitions of the same window
(and the same top N). Anything else (lexical, embedding, popular, or lists computed with other
settings) returns False and is fitted in-process as before.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.retriever.sources.coreview import CoReviewSource
from services.retriever.sources.transitions import TransitionSource
from shared.neighbours import COREVIEW, StoredNeighbours, backward_kind, forward_kind


def load_into(source: Any, stored: StoredNeighbours, *, items: Iterable[str] = ()) -> bool:
    """Load ``source``'s matrices from ``stored``; True when it did (the source is then ready)."""
    lists = stored.lists
    if isinstance(source, CoReviewSource):
        if COREVIEW not in lists or source.neighbours != stored.top:
            return False
        source.use_lists(lists[COREVIEW], items=items)
        return True
    if isinstance(source, TransitionSource):
        fwd, bwd = forward_kind(source.window), backward_kind(source.window)
        if fwd not in lists or bwd not in lists or (source.neighbours or 0) != stored.transitions_top:
            return False
        source.use_lists(forward=lists[fwd], backward=lists[bwd], items=items)
        return True
    return False
