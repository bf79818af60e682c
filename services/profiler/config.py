"""Profiler settings (``RECSYS_PROFILER_*``; the LLM knobs ``shared.llm`` reads come from ``LlmSettings``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.config import LlmSettings


class ProfilerSettings(LlmSettings):
    """Defaults run offline on CPU with the packaged SmolLM2 GGUF; production sets a 7B id on GPU.

    Users generated per LLM batch: ``LLM_BATCH_SIZE`` (inherited, ``RECSYS_LLM_BATCH_SIZE``).
    """

    # Trigger (reviews.v1 consumer)
    PROFILER_GROUP: str = Field("profiler-trigger", description="consumer group of the trigger")
    PROFILER_DEBOUNCE_S: float = Field(2.0, ge=0, description="quiet time per user before a job is queued")
    PROFILER_MAX_WAIT_S: float = Field(30.0, gt=0, description="a busy user is queued at least this often")
    PROFILER_USERS_PER_TASK: int = Field(8, ge=1, description="users per Celery task (one LLM batch)")

    # Worker
    PROFILER_QUEUE: str = Field("profiler", description="Celery queue of the profile jobs")
    PROFILER_CONCURRENCY: int = Field(1, ge=1, description="worker processes (one model each)")
    PROFILER_TASK_TIME_LIMIT_S: int = Field(900, ge=10, description="hard limit per task")
    PROFILER_MAX_RETRIES: int = Field(5, ge=0, description="task retries on infrastructure errors")
    PROFILER_VISIBILITY_TIMEOUT_S: int = Field(
        3600, ge=1, description="Redis: an unacked job is redelivered after this (worker killed)"
    )

    # Profile building
    PROFILER_HISTORY_CHARS: int = Field(3000, ge=200, description="review-text budget per prompt")
    PROFILER_MAX_REVIEWS: int = Field(200, ge=1, description="newest reviews considered per user")
    PROFILER_REVIEW_CHARS: int = Field(400, ge=50, description="characters kept of one review")
    PROFILER_MAX_TERMS: int = Field(8, ge=1, description="terms kept per profile field")
    PROFILER_MAX_NEW_TOKENS: int = Field(200, ge=16, description="profile JSON generation budget")
    PROFILER_SUMMARY_TOKENS: int = Field(160, ge=16, description="summary generation budget")
    PROFILER_VOCAB_K: int = Field(200, ge=10, description="top-K n-grams of the domain vocabulary")
    PROFILER_VOCAB_TTL_S: float = Field(
        300.0, ge=0, description="how long a worker trusts its vocabulary before re-checking the catalog"
    )
    PROFILER_PROVISIONAL: bool = Field(
        True,
        description="write an extractive profile first for users that have none, then refine it with the LLM "
        "(a new user is personalised in seconds even while the LLM queue is long)",
    )
    PROFILER_PUBLISH_DIRECT: bool = Field(
        True, description="publish the outbox rows right after commit (the ingest relay is the backstop)"
    )


@lru_cache
def get_settings() -> ProfilerSettings:
    return ProfilerSettings()
