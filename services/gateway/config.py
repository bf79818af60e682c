"""Gateway settings (``RECSYS_*`` env vars): per-dependency timeouts and strategy knobs."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from services.gateway.schemas import ReasonsBackend
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
    GATEWAY_CACHE_SIZE: int = Field(50_000, ge=1, description="answers kept per gateway replica (LRU)")
    GATEWAY_PENDING_TTL_S: float = Field(
        5.0, ge=0, description="llm_only answers whose LLM re-rank is still pending are cached this long at "
        "most (the stored re-rank is served within it once written); 0: never cached"
    )


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
