"""A service's settings built on the session's common test settings (database, broker, home, prefix)."""

from __future__ import annotations

from typing import Any, TypeVar

from shared.config import CommonSettings

S = TypeVar("S", bound=CommonSettings)


def service_settings(cls: type[S], common: CommonSettings, **updates: Any) -> S:
    """``cls`` with every common field of ``common``, its own fields from the defaults, then ``updates``."""
    return cls(**{**common.model_dump(), **updates})
