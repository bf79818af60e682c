"""Candidate sources of the retriever: one interface (:class:`CandidateSource`), one module each.

* :mod:`coreview` — item-to-item co-review neighbours (cosine over the binary user x item matrix)
* :mod:`transitions` — "reviewed next after X" (and before), from each user's sequence
* :mod:`lexical` — TF-IDF over the item text against a recency-weighted user vector; ``ReviewTextSource``
  (``reviews``) the same over what the item's reviewers wrote
* :mod:`popular` — most reviewed in a recent window above a rating floor (``shared.popularity``)
* :mod:`blend` — a weighted blend of sources filled from a fallback; :mod:`tuning` picks its weights
  on a validation target

Pure numpy/scipy/scikit-learn: no database, no HTTP. The offline evaluation's reference strategies
(``tools/evaluation/strategies/reference.py``) run these objects.
"""
from services.retriever.sources.base import Candidates, CandidateSource, InteractionRecord, with_params
from services.retriever.sources.blend import WeightedBlend
from services.retriever.sources.coreview import CoReviewSource
from services.retriever.sources.lexical import LexicalSource
from services.retriever.sources.popular import PopularSource
from services.retriever.sources.transitions import TransitionSource

__all__ = ["CandidateSource", "Candidates", "CoReviewSource", "InteractionRecord", "LexicalSource",
           "PopularSource", "TransitionSource", "WeightedBlend", "with_params"]
