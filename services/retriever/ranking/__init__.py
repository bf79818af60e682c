"""The ranking core: candidate sources' lists -> features -> a LightGBM LambdaRank model or a tuned
blend, chosen on a temporal validation target (:mod:`core`, :mod:`features`, :mod:`learn`)."""
from services.retriever.ranking.core import Ranked, RankingCore, default_factories

__all__ = ["Ranked", "RankingCore", "default_factories"]
