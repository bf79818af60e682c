"""Ingest fixtures: one ingest app (real PostgreSQL, real broker, relay running) for the ingest tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from shared.config import CommonSettings
from tests.utils.settings import service_settings


@pytest.fixture(scope="session")
def ingest_settings(settings: CommonSettings) -> IngestSettings:
    return service_settings(IngestSettings, settings).model_copy(
        update={"RELAY_INTERVAL_S": 0.05, "RELAY_MAX_BACKOFF_S": 1.0, "API_KEYS": []}
    )


@pytest.fixture(scope="package")
def client(ingest_settings: IngestSettings) -> Iterator[TestClient]:
    # Package scope: its relay thread publishes every pending outbox row of the session database (with
    # this app's topic prefix), so it must be gone before other packages' tests write outbox rows.
    with TestClient(create_app(ingest_settings)) as c:
        yield c
