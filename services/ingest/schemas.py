"""Request and response models of the ingest API (the record models themselves are ``shared.amazon``'s)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.amazon import ItemIn, ReviewIn

Kind = Literal["reviews", "items"]
# The model one record of each kind is validated with (also the request body schema in OpenAPI).
RECORD_MODELS: dict[str, type[BaseModel]] = {"reviews": ReviewIn, "items": ItemIn}


class Rejection(BaseModel):
    """One record that failed validation: its position in the request and every field error."""

    model_config = ConfigDict(frozen=True)

    index: int
    errors: list[dict[str, str]]  # {"field": dotted path, "message", "type"}

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "errors": self.errors}

    def summary(self) -> str:
        return "; ".join(f"{e['field'] or '<record>'}: {e['message']}" for e in self.errors)


class IngestResult(BaseModel):
    """The 202 body: records stored, rows new or changed (= events written), rejections by index."""

    accepted: int = 0
    changed: int = 0
    rejected: list[Rejection] = Field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "changed": self.changed,
            "rejected": [r.as_dict() for r in self.rejected],
        }
