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


PROD_DB = "postgresql+psycopg://recsys@db/recsys"


@pytest.mark.parametrize(
    ("keys", "missing"),
    [({}, "RECSYS_API_KEYS and RECSYS_ADMIN_KEY"), ({"API_KEYS": ["w"]}, "RECSYS_ADMIN_KEY"),
     ({"ADMIN_KEY": "a"}, "RECSYS_API_KEYS")],
)
def test_production_refuses_to_start_without_write_and_admin_keys(keys: dict[str, object], missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        CommonSettings(ENVIRONMENT="production", DATABASE_URL=PROD_DB, **keys)


def test_reads_of_personal_data_need_a_key_in_production_and_are_open_in_development() -> None:
    prod = CommonSettings(ENVIRONMENT="production", DATABASE_URL=PROD_DB, API_KEYS=["w"], ADMIN_KEY="a")
    assert prod.read_keys == ["a"]  # never open in production: at least the admin key
    assert CommonSettings(ENVIRONMENT="production", DATABASE_URL=PROD_DB, API_KEYS=["w"], ADMIN_KEY="a",
                          READ_KEYS=["r1", "r2"]).read_keys == ["r1", "r2", "a"]
    assert CommonSettings(ENVIRONMENT="development").read_keys == []  # the embedded demo stays open
    assert CommonSettings(ENVIRONMENT="development", ADMIN_KEY="a").read_keys == []
    assert CommonSettings(ENVIRONMENT="development", READ_KEYS="r").read_keys == ["r"]
