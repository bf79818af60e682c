"""shared.config: settings from the environment and their production guards."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import CommonSettings


def test_api_keys_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_API_KEYS", "a, b,,c")
    assert CommonSettings().API_KEYS == ["a", "b", "c"]


def test_production_refuses_embedded_sqlite() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        CommonSettings(ENVIRONMENT="production", DATABASE_URL="")
