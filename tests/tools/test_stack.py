"""``recsys up/down/status`` on a tmp HOME with non-default ports: real broker, real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from shared.broker import free_port
from shared.config import CommonSettings
from shared.events import REVIEWS
from tests.utils.records import read_topic, review
from tools import stack


@pytest.fixture
def stack_settings(tmp_path: Path) -> Iterator[CommonSettings]:
    s = CommonSettings(
        HOME=tmp_path / "home",
        KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        INGEST_URL=f"http://127.0.0.1:{free_port()}",
        GATEWAY_URL=f"http://127.0.0.1:{free_port()}",
        RETRIEVER_URL=f"http://127.0.0.1:{free_port()}",
        EXPLAINER_URL=f"http://127.0.0.1:{free_port()}",
        ALS_URL=f"http://127.0.0.1:{free_port()}",
        DASHBOARD_URL=f"http://127.0.0.1:{free_port()}",
    )
    yield s
    stack.down(settings=s)  # never leave processes behind, even when a test fails


@pytest.mark.slow
def test_up_status_down(
    stack_settings: CommonSettings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = stack_settings.HOME
    assert stack.up(settings=stack_settings, only=["ingest", "ingest-raw"], timeout_s=120) == 0, (
        capsys.readouterr().out
    )
    out = capsys.readouterr().out
    assert "ok   broker" in out and "ok   ingest " in out and "ok   ingest-raw" in out
    pid_ingest = int((home / "pids" / "ingest.pid").read_text())
    assert (home / "recsys.db").exists() and (home / "logs" / "ingest.log").exists()

    # The child processes got the non-default ports and HOME: a review goes HTTP → SQLite → broker.
    r = review()
    resp = httpx.post(f"{stack_settings.INGEST_URL}/v1/reviews", json=r, timeout=30)
    assert resp.status_code == 202, resp.text
    found = read_topic(
        stack_settings,
        REVIEWS,
        until=lambda f: len(f) >= 1,
        match=lambda rec: rec.key == r["user_id"].encode(),
        timeout_s=30,
    )
    assert len(found) == 1

    # Idempotent: a second up starts nothing new.
    assert stack.up(settings=stack_settings, only=["ingest", "ingest-raw"], timeout_s=60) == 0
    assert "already running" in capsys.readouterr().out
    assert int((home / "pids" / "ingest.pid").read_text()) == pid_ingest

    assert stack.status(settings=stack_settings) == 0
    table = capsys.readouterr().out
    ingest_row = next(line for line in table.splitlines() if line.startswith("ingest "))
    assert str(pid_ingest) in ingest_row and "running" in ingest_row and "ok" in ingest_row
    assert "stopped" in next(line for line in table.splitlines() if line.startswith("gateway"))
    dashboard_row = next(line for line in table.splitlines() if line.startswith("dashboard"))
    assert "stopped" in dashboard_row and str(urlsplit(stack_settings.DASHBOARD_URL).port) in dashboard_row

    # A process whose module does not exist is reported as failed, and up says so in its exit code.
    ghost = stack.Proc("ghost", ("serve", "ghost"), "services.ghost.app", "http://127.0.0.1:1")
    real = stack.processes
    monkeypatch.setattr(stack, "processes", lambda s: [*real(s), ghost])
    assert stack.up(settings=stack_settings, only=["ingest", "ghost"], timeout_s=30) == 1
    assert "FAIL ghost" in capsys.readouterr().out

    assert stack.down(settings=stack_settings) == 0
    out = capsys.readouterr().out
    assert "stopped ingest" in out and "stopped broker" in out
    assert not list((home / "pids").glob("*.pid"))
    assert not stack._alive(pid_ingest)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{stack_settings.INGEST_URL}/healthz", timeout=2)
    assert stack.down(settings=stack_settings) == 0
    assert "nothing was running" in capsys.readouterr().out


@pytest.mark.slow
def test_crashing_process_is_reported_with_its_log(
    stack_settings: CommonSettings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = stack.Proc("crasher", ("consume", "no-such-consumer"), "services.ingest.raw_consumer")
    monkeypatch.setattr(stack, "processes", lambda s: [crash])
    assert stack.up(settings=stack_settings, timeout_s=30) == 1
    out = capsys.readouterr().out
    assert "FAIL crasher" in out and "exited during start-up" in out
    assert "unknown consumer 'no-such-consumer'" in out  # the last log lines are shown


def test_the_stack_serves_the_dashboard_on_8005_by_default() -> None:
    procs = {p.name: p for p in stack.processes(CommonSettings())}
    dashboard = procs["dashboard"]
    assert dashboard.args == ("serve", "dashboard", "--host", "127.0.0.1", "--port", "8005")
    assert dashboard.url == "http://127.0.0.1:8005" and dashboard.module == "services.dashboard.app"

