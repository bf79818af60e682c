"""Request and response models of the ALS HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal["explicit", "implicit"]


class ScoredItem(BaseModel):
    parent_asin: str
    score: float


class Recommendations(BaseModel):
    user_id: str
    model_version: int
    kind: str
    items: list[ScoredItem]


class ModelInfo(BaseModel):
    version: int
    kind: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_users: int
    n_items: int
    n_ratings: int
    error: str | None
    run_id: str | None
    started_at: str | None
    trained_at: str | None


class TrainRequest(BaseModel):
    implicit: bool = Field(False, description="train the implicit-feedback ranking model instead")


class TrainAccepted(BaseModel):
    run_id: str
    status: str = "queued"
    executor: str
    kind: str
