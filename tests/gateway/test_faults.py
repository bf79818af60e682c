"""Dependency faults while the gateway runs, with real parts: a retriever that accepts connections and
never answers (hung), and a real explainer process that is frozen (SIGSTOP), resumed and then killed
(SIGKILL) between two requests. The gateway must answer within its per-dependency timeouts, say
``degraded`` and name the dependency in ``notes``. (Retriever and ALS down from the start, an explainer
stopped in-process and a slow LLM are in test_app.py.)"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from shared.config import CommonSettings
from tests.utils.gateway import Seeded
from tests.utils.servers import ServiceProcess, stalled_server, start_service_process

MARGIN_S = 1.5  # the gateway's own work (DB reads, local template reasons) on a busy 2-core machine


def _timed(c: TestClient, user: str, **params: Any) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    r = c.get(f"/v1/users/{user}/recommendations", params=params)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    return r.json(), elapsed


def _complete(body: dict[str, Any], k: int, seeded: Seeded) -> None:
    asins = [i["parent_asin"] for i in body["items"]]
    assert len(asins) == k and len(set(asins)) == k
    assert not set(asins) & set(seeded.history)
    assert all(i["reason"] for i in body["items"])


@pytest.mark.parametrize("strategy", ["hybrid", "llm_only"])
def test_hung_retriever_times_out_into_a_degraded_answer(
    gateway_settings: GatewaySettings, seeded: Seeded, strategy: str
) -> None:
    timeout = gateway_settings.GATEWAY_RETRIEVER_TIMEOUT_S
    # hybrid falls back to ALS (down: refused at once, bounded by its own timeout in any case)
    bound = timeout + gateway_settings.GATEWAY_ALS_TIMEOUT_S + MARGIN_S
    with stalled_server() as hung:
        settings = gateway_settings.model_copy(update={"RETRIEVER_URL": hung.url})
        with TestClient(create_app(settings)) as c:
            body, elapsed = _timed(c, seeded.warm_user, k=5, strategy=strategy)
            assert hung.accepted >= 1  # the gateway did connect: the hang, not a refusal, was tested
    assert body["degraded"] is True and "retriever:timeout" in body["notes"], body["notes"]
    _complete(body, 5, seeded)
    assert timeout * 0.9 <= elapsed < bound, f"{elapsed:.2f}s (retriever timeout {timeout}s)"


def _explainer_env(settings: CommonSettings, home: Path) -> dict[str, str]:
    return {
        "RECSYS_ENVIRONMENT": "test",
        "RECSYS_HOME": str(home),
        "RECSYS_DATABASE_URL": settings.database_url,
        "RECSYS_KAFKA_BOOTSTRAP": settings.KAFKA_BOOTSTRAP,
        "RECSYS_TOPIC_PREFIX": "faults.",
        "RECSYS_EXPLAINER_BACKEND": "template",
        "RECSYS_EXPLAINER_PRECOMPUTE": "false",
        "RECSYS_LOG_LEVEL": "WARNING",
    }


def test_explainer_process_frozen_then_killed_between_requests(
    gateway_settings: GatewaySettings, seeded: Seeded, settings: CommonSettings, tmp_path: Path
) -> None:
    explainer: ServiceProcess = start_service_process(
        "explainer", _explainer_env(settings, tmp_path), tmp_path / "explainer.log", ready_path="/readyz"
    )
    timeout = gateway_settings.GATEWAY_EXPLAINER_TIMEOUT_S
    try:
        gw = gateway_settings.model_copy(update={"EXPLAINER_URL": explainer.url})
        with TestClient(create_app(gw)) as c:
            q = {"k": 4, "strategy": "popular"}
            # (the retriever is down in these settings: its note is expected, no explainer note is)
            body, _ = _timed(c, seeded.warm_user, **q)  # also opens the pooled connection the kill resets
            assert not any(n.startswith("explainer:") for n in body["notes"]), body["notes"]

            explainer.signal(signal.SIGSTOP)  # frozen: the kernel still accepts, nobody answers
            body, elapsed = _timed(c, seeded.warm_user, **q)
            assert body["degraded"] is True and "explainer:timeout" in body["notes"], body["notes"]
            _complete(body, 4, seeded)
            assert timeout * 0.9 <= elapsed < timeout + MARGIN_S, f"{elapsed:.2f}s (explainer timeout {timeout}s)"

            explainer.signal(signal.SIGCONT)  # resumed: answers again, nothing degraded
            body, _ = _timed(c, seeded.warm_user, **q)
            assert not any(n.startswith("explainer:") for n in body["notes"]), body["notes"]

            explainer.kill()
            body, elapsed = _timed(c, seeded.warm_user, **q)
            assert body["degraded"] is True and "explainer:unreachable" in body["notes"], body["notes"]
            _complete(body, 4, seeded)
            assert all(i["reason_source"] == "template" for i in body["items"])
            assert elapsed < timeout + MARGIN_S, f"{elapsed:.2f}s (explainer timeout {timeout}s)"
    finally:
        explainer.stop()
    assert explainer.proc.returncode == -signal.SIGKILL, explainer.log_tail()
