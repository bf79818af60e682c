"""The demo's printing path against a real gateway (retriever/ALS down, so every list is degraded)."""

from __future__ import annotations

import pytest

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from tests.utils.gateway import Seeded
from tests.utils.servers import dead_url, serving
from tools.demo import SHOWN_STRATEGIES, print_next_steps, print_user, run_compare


def test_print_user_shows_history_profile_and_every_strategy(
    gateway_settings: GatewaySettings, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(create_app(gateway_settings)) as gw:
        settings = gateway_settings.model_copy(update={"GATEWAY_URL": gw.url})
        print_user(settings, seeded.warm_user, k=3)
    out = capsys.readouterr().out
    assert f"User {seeded.warm_user}" in out
    assert "Soft Wig Model 0" in out  # history, newest first, with item titles
    assert "profile v2 (ready)" in out
    for strategy in SHOWN_STRATEGIES:
        assert f"[{strategy}]" in out
    assert out.count("degraded") >= 4  # retriever and ALS are down in this setup: every list says so


def test_compare_without_a_gateway_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.gateway import config

    config.get_settings.cache_clear()
    monkeypatch.setenv("RECSYS_GATEWAY_URL", dead_url())
    try:
        assert run_compare("ANYUSER", k=5) == 1
    finally:
        config.get_settings.cache_clear()
    assert "not reachable" in capsys.readouterr().err


def test_the_demo_ends_by_printing_the_dashboard_url(
    gateway_settings: GatewaySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = gateway_settings.model_copy(update={"DASHBOARD_URL": "http://127.0.0.1:8005"})
    print_next_steps(settings, "U1")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "Dashboard: http://127.0.0.1:8005/"  # issue 16: the last line
    assert "  this user in the dashboard: http://127.0.0.1:8005/users/U1" in lines
