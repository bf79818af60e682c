"""Gateway settings (``RECSYS_*`` env vars): per-dependency timeouts and strategy knobs."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, get_args

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.gateway.schemas import GatewayStrategy, ReasonsBackend
from shared.config import CommonSettings


class GatewaySettings(CommonSettings):
    # Per-call timeouts (seconds). The explainer's must exceed its own LLM budget
    # (RECSYS_EXPLAINER_LLM_BUDGET_S, 3 s by default) so a slow LLM degrades inside the explainer first.
    GATEWAY_RETRIEVER_TIMEOUT_S: float = Field(3.0, gt=0)
    GATEWAY_ALS_TIMEOUT_S: float = Field(1.0, gt=0)
    GATEWAY_EXPLAINER_TIMEOUT_S: float = Field(5.0, gt=0)
    GATEWAY_RERANK_TIMEOUT_S: float = Field(
        2.0, gt=0, description="llm_only re-rank: the explainer answers at once with the stored re-rank or "
        "the retriever order (rerank=pending); raise it above EXPLAINER_RERANK_TIMEOUT_S only with "
        "RECSYS_EXPLAINER_INLINE_LLM=true")
    GATEWAY_CONNECT_TIMEOUT_S: float = Field(0.5, gt=0)
    GATEWAY_MAX_CONNECTIONS: int = Field(200, ge=1, description="pooled connections per dependency")
    # Which explainer backend the gateway asks for: auto = the LLM when loaded, under its time budget.
    GATEWAY_REASONS: ReasonsBackend = "auto"
    GATEWAY_LLM_ONLY_CANDIDATES: int = Field(50, ge=5, le=100, description="candidates handed to the re-rank")
    GATEWAY_HISTORY_LIMIT: int = Field(
        500, ge=0, description="most recent reviewed items excluded from results"
    )
    GATEWAY_SEND_HISTORY: bool = Field(
        True,
        description="hand the retriever the RETRIEVER_HISTORY_MAX most recent reviews just read with each "
        "request (it would read the same rows); false = the retriever reads them itself",
    )
    # Answer cache (per replica): an entry is reused only while the user's stamp (profile version and
    # status, number and newest of their reviews) is unchanged, so a new review or a new profile is
    # seen on the next request; new ALS models and index updates are picked up within the TTL.
    # Degraded answers are never cached. 0 disables it; a request with Cache-Control: no-cache skips it.
    GATEWAY_CACHE_TTL_S: float = Field(30.0, ge=0, description="answer cache TTL; 0 disables")
    GATEWAY_CACHE_STALE_S: float = Field(
        600.0, ge=0, description="after its TTL an answer is served this much longer while it is recomputed "
        "behind the request (stale-while-revalidate; X-Cache: stale); 0: a miss after the TTL")
    # Answers computed ahead of requests (precompute.py): when a user's profile is written (profiles.v1)
    # their default answers are computed at once; a promoted model (models.v1) makes every answer stale.
    GATEWAY_PRECOMPUTE: bool = Field(
        True, description="compute each user's default answers when their profile is written and after a "
        "promoted model (this replica's own consumer group); false: only requests fill the cache")
    GATEWAY_PRECOMPUTE_STRATEGIES: Annotated[list[GatewayStrategy], NoDecode] = Field(
        default_factory=lambda: list(get_args(GatewayStrategy)),
        description="the strategies computed ahead (comma-separated or JSON)")
    GATEWAY_PRECOMPUTE_K: int = Field(5, ge=1, le=50, description="the k computed ahead (the API's default)")
    GATEWAY_FOLLOW_S: float = Field(
        1.0, ge=0, description="every so often the users whose LLM reasons or llm_only re-rank the worker has "
        "just written get their cached answers recomputed; 0: only their TTL renews them")
    GATEWAY_PRECOMPUTE_WAIT_S: float = Field(
        2.0, ge=0, description="a precompute job waits for the requests in flight at most this long")
    GATEWAY_CACHE_SIZE: int = Field(50_000, ge=1, description="answers kept per gateway replica (LRU)")
    GATEWAY_PENDING_TTL_S: float = Field(
        5.0, ge=0, description="llm_only answers whose LLM re-rank is still pending are cached this long at "
        "most (the stored re-rank is served within it once written); 0: never cached"
    )

    @field_validator("GATEWAY_PRECOMPUTE_STRATEGIES", mode="before")
    @classmethod
    def _split_strategies(cls, v: object) -> object:
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
