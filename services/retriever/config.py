"""Retriever settings: index kind, ranking knobs and refresh intervals (``RECSYS_RETRIEVER_*``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from shared.config import CommonSettings


class RetrieverSettings(CommonSettings):
    """Defaults follow the study (top 200, min rating 3.3, llm_only 4.0 / 5 ratings / 300 / 50).

    ``RETRIEVER_HISTORY_MAX`` (the history vector's most recent reviews) and ``ALS_SERVING_KIND`` (the
    live ALS model kind hybrid blends) are common settings: the gateway and the ALS service read them too.
    """

    # Index
    RETRIEVER_INDEX_KIND: Literal["flat", "flat_fp16", "hnsw", "ivf"] = Field(
        default="flat",
        description="flat = exact inner product; flat_fp16 = exhaustive over fp16 codes (2x less memory)",
    )
    RETRIEVER_HNSW_M: int = Field(default=32, ge=4, le=128)
    RETRIEVER_HNSW_EF_CONSTRUCTION: int = Field(default=80, ge=8)
    RETRIEVER_HNSW_EF_SEARCH: int = Field(default=256, ge=8, description="must exceed the top-N fetched")
    RETRIEVER_IVF_NLIST: int = Field(default=1024, ge=1)
    RETRIEVER_IVF_NPROBE: int = Field(default=32, ge=1)
    RETRIEVER_SNAPSHOTS_KEPT: int = Field(
        default=3, ge=1, description="older snapshot directories are deleted"
    )
    RETRIEVER_EMBED_BATCH: int = Field(default=64, ge=1)
    RETRIEVER_FAISS_THREADS: int = Field(
        default=1,
        ge=0,
        description="OpenMP threads per FAISS search; 1 suits one-query-per-request serving, 0 = all",
    )

    # Freshness
    RETRIEVER_POLL_S: float = Field(
        default=1.0, gt=0, description="how often the HTTP process checks the manifest"
    )
    RETRIEVER_CATALOG_REFRESH_S: float = Field(
        default=5.0, gt=0, description="item stats refresh from the DB"
    )
    RETRIEVER_CATALOG_FULL_RELOAD_S: float = Field(default=900.0, gt=0)
    RETRIEVER_INDEXER_GROUP: str = Field(
        default="retriever-indexer", description="consumer group of the indexer"
    )
    RETRIEVER_INDEXER_MAX_RECORDS: int = Field(default=500, ge=1)
    RETRIEVER_PROFILE_LISTENER: bool = Field(
        default=True, description="HTTP process listens on profiles.v1 to pre-compute profile vectors"
    )
    RETRIEVER_MODELS_LISTENER: bool = Field(
        default=True,
        description="HTTP process listens on models.v1: a newly live model version's neighbour lists are "
        "looked for at once (the ranking core serves co-review / transitions from them)",
    )
    RETRIEVER_SYNC_ON_START: bool = Field(
        default=True, description="HTTP process catches the newest snapshot up with the DB before serving"
    )

    # Ranking
    RETRIEVER_TOP_N: int = Field(default=200, ge=1, le=5000, description="FAISS candidates before re-ranking")
    RETRIEVER_MIN_RATING: float = Field(default=3.3, ge=0, le=5)
    RETRIEVER_KEEP_UNRATED: bool = Field(default=True, description="keep items without any rating in hybrid")
    RETRIEVER_MMR_LAMBDA: float = Field(default=0.7, ge=0, le=1, description="1 = pure relevance")
    RETRIEVER_PROFILE_WEIGHT: float = Field(
        default=0.5, ge=0, le=1, description="profile vs history in the user vector"
    )
    RETRIEVER_RERANK_PROFILE_WEIGHT: float = Field(
        default=0.5, ge=0, le=1, description="cosine to profile in re-rank"
    )
    RETRIEVER_RECENCY_HALF_LIFE_DAYS: float = Field(default=180.0, gt=0)
    RETRIEVER_DISLIKE_WEIGHT: float = Field(default=0.5, ge=0, description="push of items rated <= 2")
    RETRIEVER_ALS_WEIGHT: float = Field(default=0.3, ge=0, le=1, description="ALS share of the blended score")
    RETRIEVER_ALS_BLEND: int = Field(
        default=50,
        ge=0,
        le=500,
        description="hybrid: the user's top-N of the live ALS model (read from the DB, as the ALS service "
        "stores it) blended into the candidates when the caller sends none; 0 = only what callers send",
    )
    RETRIEVER_USER_CACHE_SIZE: int = Field(
        default=20_000,
        ge=0,
        description="users whose stored profile (per profile version the caller saw: the gateway sends "
        "it) and ALS top-N (per model version) are kept in memory; 0 = read them on every request",
    )
    RETRIEVER_RANKER: bool = Field(
        default=True,
        description="hybrid ranks with the ranking core (candidate sources + LambdaRank or a tuned blend, "
        "fitted in the background on the reviews); false = the study's vector pipeline only",
    )
    RETRIEVER_RANKER_REFIT_S: float = Field(
        default=300.0, gt=0, description="at most one ranking-core refit per this many seconds (when data changed)"
    )
    RETRIEVER_PRECOMPUTE: bool = Field(
        default=True,
        description="hybrid answers of the ranking core are kept per user until their inputs change, and "
        "computed ahead (a ready profile, a new snapshot, catalog or core) so requests find them ready",
    )
    RETRIEVER_PRECOMPUTE_K: int = Field(
        default=5, ge=1, le=200, description="the k answers are computed ahead for (the gateway's default k)"
    )
    RETRIEVER_PRECOMPUTE_USERS: int = Field(
        default=50_000, ge=0, description="users whose precomputed hybrid answers are kept (LRU; 0 = none)"
    )
    RETRIEVER_RANKER_TUNE_USERS: int = Field(
        default=3000, ge=0, description="validation users the ranking core tunes on per round (0 = all)"
    )
    RETRIEVER_LLM_MIN_RATING: float = Field(default=4.0, ge=0, le=5)
    RETRIEVER_LLM_MIN_COUNT: int = Field(default=5, ge=0)
    RETRIEVER_LLM_TITLE_TOP: int = Field(default=300, ge=1)
    RETRIEVER_LLM_K: int = Field(default=50, ge=1)


@lru_cache
def get_settings() -> RetrieverSettings:
    return RetrieverSettings()
