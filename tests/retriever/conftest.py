"""Retriever test fixtures: ONE real encoder per session, synthetic data with planted tastes, and the
stack (real PostgreSQL, broker, model) that the service, app and users tests each build per module."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.ingest.config import IngestSettings
from services.ingest.service import ingest
from services.retriever.app import create_app
from services.retriever.config import RetrieverSettings
from services.retriever.indexer import Indexer, build_loop
from services.retriever.offline import OfflineRetriever, history_from_reviews
from services.retriever.service import RetrieverService
from shared.config import CommonSettings
from shared.embeddings import Encoder, get_encoder
from shared.outbox import OutboxRelay
from tests.utils.databases import temporary_database
from tests.utils.settings import service_settings
from tools.synth import generate


class CountingEncoder:
    """The real encoder, counting how many texts it was asked to embed (restart tests)."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.model_name = inner.model_name
        self.texts = 0

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.encode(list(texts), batch_size=batch_size)


def wait_for(predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.2) -> float:
    """Seconds until ``predicate()`` is truthy; fails the test on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


def service_of(client: TestClient) -> RetrieverService:
    """The RetrieverService behind the ``client`` fixture."""
    return client.svc  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return get_encoder(CommonSettings().EMBEDDING_MODEL)


@pytest.fixture(scope="session")
def synth() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(reviews, meta, truth): 120 items in 10 families, users with planted favourite families."""
    return generate(users=200, items=120, seed=3)


@pytest.fixture(scope="session")
def offline(encoder: Encoder, synth: Any) -> OfflineRetriever:
    reviews, meta, _ = synth
    return OfflineRetriever.from_data(items=meta, reviews=reviews, encoder=encoder)


@pytest.fixture(scope="session")
def histories(synth: Any) -> dict[str, Any]:
    return history_from_reviews(synth[0])


# ---- the stack: one per test module ---------------------------------------------------------------
@pytest.fixture(scope="module")
def own_db() -> Iterator[str]:
    """A database of the module's own: bootstrap embeds exactly the items its tests wrote."""
    with temporary_database("recsys_retriever") as url:
        yield url


@pytest.fixture(scope="module")
def data() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    return generate(users=40, items=32, seed=11)


@pytest.fixture(scope="module")
def rsettings(
    settings: CommonSettings, own_db: str, tmp_path_factory: pytest.TempPathFactory
) -> RetrieverSettings:
    return service_settings(
        RetrieverSettings,
        settings,
        DATABASE_URL=own_db,
        HOME=tmp_path_factory.mktemp("retriever-home"),
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:6]}.",
        RETRIEVER_POLL_S=0.2,
        RETRIEVER_CATALOG_REFRESH_S=0.5,
        RETRIEVER_PROFILE_LISTENER=False,
        RETRIEVER_INDEXER_GROUP=f"retriever-indexer-{uuid.uuid4().hex[:6]}",
        # these modules test the vector pipeline and its ALS blend; test_ranker.py turns the core on
        RETRIEVER_RANKER=False,
    )


@pytest.fixture(scope="module")
def relay(rsettings: RetrieverSettings) -> Iterator[OutboxRelay]:
    r = OutboxRelay(settings=service_settings(IngestSettings, rsettings))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def loaded(rsettings: RetrieverSettings, data: Any) -> dict[str, Any]:
    reviews, meta, _ = data
    assert ingest(database_url=rsettings.database_url, kind="items", records=meta).accepted == len(meta)
    assert ingest(database_url=rsettings.database_url, kind="reviews", records=reviews).accepted == len(
        reviews
    )
    return {"items": len(meta)}


@pytest.fixture(scope="module")
def counting(encoder: Encoder) -> CountingEncoder:
    return CountingEncoder(encoder)


@pytest.fixture(scope="module")
def client(rsettings: RetrieverSettings, loaded: Any, counting: CountingEncoder) -> Iterator[TestClient]:
    svc = RetrieverService(rsettings, encoder=counting)
    with TestClient(create_app(rsettings, service=svc)) as c:
        assert svc.wait_ready(120), svc.last_error
        c.svc = svc  # type: ignore[attr-defined]
        yield c


@pytest.fixture(scope="module")
def indexer(rsettings: RetrieverSettings, client: TestClient, encoder: Encoder) -> Iterator[Indexer]:
    idx = Indexer(rsettings, encoder=CountingEncoder(encoder))
    idx.bootstrap()
    loop = build_loop(rsettings, idx)
    t = threading.Thread(target=loop.run, name="test-indexer", daemon=True)
    t.start()
    yield idx
    loop.stop()
    t.join(timeout=20)
