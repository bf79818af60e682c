"""Dashboard settings (``RECSYS_DASHBOARD_*``): timeouts per dependency call and what the pages show."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from shared.config import CommonSettings


class DashboardSettings(CommonSettings):
    # Every dependency call has its own short timeout: a service that is down renders its panel as
    # "down" and the rest of the page still comes. Recommendations load per strategy after the page,
    # so the page never waits for them (the gateway answers at once; the long timeout is for a stack
    # configured to wait for its LLM, RECSYS_EXPLAINER_INLINE_LLM).
    DASHBOARD_TIMEOUT_S: float = Field(3.0, gt=0, description="health, readiness, models, items, profile")
    DASHBOARD_RECS_TIMEOUT_S: float = Field(90.0, gt=0, description="one strategy's recommendations")
    DASHBOARD_INGEST_TIMEOUT_S: float = Field(10.0, gt=0, description="posting the test review")
    DASHBOARD_BROKER_TIMEOUT_S: float = Field(5.0, gt=0, description="topics, consumer groups and lag")
    DASHBOARD_K: int = Field(5, ge=1, le=50, description="items per strategy on the user page")
    DASHBOARD_HISTORY_LIMIT: int = Field(20, ge=1, le=500, description="reviews shown on the user page")
    DASHBOARD_NEIGHBOURS: int = Field(10, ge=1, le=100, description="neighbours shown on the item page")
    DASHBOARD_RATE_WINDOW_MIN: int = Field(60, ge=5, le=1440, description="minutes of the reviews/min chart")
    DASHBOARD_PROFILER_QUEUE: str = Field("profiler", description="Celery queue of the profile jobs")
    DASHBOARD_EVAL_DIR: Path | None = Field(
        None, description="where to look for `recsys evaluate` output (metrics.json); default RECSYS_HOME"
    )
    # Keys the dashboard sends as a client. The ingest key defaults to the first of API_KEYS; the
    # key for the other services (gateway reads of personal data) defaults to ADMIN_KEY.
    DASHBOARD_INGEST_KEY: str | None = Field(None, description="bearer key for POST /v1/reviews")
    DASHBOARD_READ_KEY: str | None = Field(
        None, description="bearer key sent to the gateway, retriever and ALS (default: ADMIN_KEY)"
    )

    @property
    def ingest_key(self) -> str | None:
        return self.DASHBOARD_INGEST_KEY or (self.API_KEYS[0] if self.API_KEYS else None)

    @property
    def read_key(self) -> str | None:
        return self.DASHBOARD_READ_KEY or self.ADMIN_KEY

    @property
    def eval_dir(self) -> Path:
        return self.DASHBOARD_EVAL_DIR or self.HOME

    @property
    def auth_required(self) -> bool:
        """Open only when no key at all is configured (the embedded demo)."""
        return bool(self.ADMIN_KEY or self.API_KEYS)


@lru_cache
def get_settings() -> DashboardSettings:
    return DashboardSettings()
