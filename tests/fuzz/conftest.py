"""The fuzzed stack: every HTTP service's real app served by uvicorn on a free port, on a database of the
fuzz run's own (the fuzzed writes never reach other tests' data), the session's broker (own topic prefix)
and Redis. Seeded so the read endpoints have something to find: a small synthetic catalog with reviews, a
ready profile and a live ALS model (explicit and implicit) with precomputed top-N lists."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import requests

from services.als.app import create_app as create_als
from services.als.config import AlsSettings
from services.explainer.app import create_app as create_explainer
from services.explainer.config import ExplainerSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.config import GatewaySettings
from services.ingest.app import create_app as create_ingest
from services.ingest.config import IngestSettings
from services.ingest.service import ingest
from services.retriever.app import create_app as create_retriever
from services.retriever.config import RetrieverSettings
from services.retriever.service import RetrieverService
from shared.config import CommonSettings
from shared.db import session_scope
from shared.embeddings import get_encoder
from shared.models import AlsItemIndex, AlsModel, AlsTopN, Profile
from tests.utils.databases import temporary_database
from tests.utils.servers import Running, start_app
from tests.utils.settings import service_settings
from tools.synth import generate

# Requests sent per "service METHOD /path" in this run (reported at the end of the run).
CASES: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        terminalreporter.section("fuzz cases per operation")
        for label, n in sorted(CASES.items()):
            terminalreporter.write_line(f"{n:6d}  {label}")
        terminalreporter.write_line(f"{sum(CASES.values()):6d}  in all")


@dataclass
class Stack:
    urls: dict[str, str]
    users: list[str]
    items: list[str]


def _seed(database_url: str) -> tuple[list[str], list[str]]:
    """A synthetic catalog and reviews, one ready profile, a live explicit and implicit ALS model."""
    reviews, meta, _ = generate(users=30, items=24, seed=5)
    assert ingest(database_url=database_url, kind="items", records=meta).accepted == len(meta)
    assert ingest(database_url=database_url, kind="reviews", records=reviews).accepted == len(reviews)
    users = sorted({r["user_id"] for r in reviews})
    items = [m["parent_asin"] for m in meta]
    now = datetime.now(UTC)
    with session_scope(database_url) as s:
        s.add(Profile(user_id=users[0], version=1, status="ready", source="llm", preferred_products=["wigs"],
                      liked_features=["soft"], dislikes=[], potential_interests=[],
                      summary="Likes soft things. Buys wigs. Will buy more.", n_reviews=3))
        for kind in ("explicit", "implicit"):
            model = AlsModel(kind=kind, status="live", params={"rank": 8}, metrics={"rmse": 1.0}, n_users=len(users),
                             n_items=len(items), n_ratings=len(reviews), started_at=now, trained_at=now,
                             run_id=uuid.uuid4().hex)
            s.add(model)
            s.flush()
            s.add(AlsItemIndex(model_version=model.version, item_ids="\n".join(items).encode()))
            for user in users[:10]:
                order = np.arange(len(items), dtype="<i4")[::-1].copy()
                scores = np.linspace(5, 1, len(items), dtype="<f4")
                s.add(AlsTopN(model_version=model.version, user_id=user, items=order.tobytes(),
                              scores=scores.tobytes()))
    return users, items


@pytest.fixture(scope="package")
def fuzz_db() -> Iterator[str]:
    with temporary_database("recsys_fuzz") as url:
        yield url


@pytest.fixture(scope="package")
def stack(settings: CommonSettings, fuzz_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """ingest, retriever, explainer, als and gateway (which calls the other three), all real, all up."""
    home: Path = tmp_path_factory.mktemp("fuzz-home")
    common = service_settings(CommonSettings, settings, DATABASE_URL=fuzz_db, HOME=home,
                              TOPIC_PREFIX=f"fuzz{uuid.uuid4().hex[:6]}.")
    users, items = _seed(fuzz_db)
    running: dict[str, Running] = {}
    try:
        running["ingest"] = start_app(create_ingest(service_settings(
            IngestSettings, common, API_KEYS=[], RELAY_INTERVAL_S=0.2)))
        rsettings = service_settings(
            RetrieverSettings, common, HOME=home / "retriever", RETRIEVER_PROFILE_LISTENER=False,
            RETRIEVER_POLL_S=0.5, RETRIEVER_CATALOG_REFRESH_S=1.0,
            RETRIEVER_INDEXER_GROUP=f"fuzz-indexer-{uuid.uuid4().hex[:6]}")
        svc = RetrieverService(rsettings, encoder=get_encoder(rsettings.EMBEDDING_MODEL))
        running["retriever"] = start_app(create_retriever(rsettings, service=svc), ready_path="/readyz")
        running["explainer"] = start_app(create_explainer(
            service_settings(ExplainerSettings, common, EXPLAINER_BACKEND="template", EXPLAINER_PRECOMPUTE=False),
            reasoner=None))
        running["als"] = start_app(create_als(service_settings(AlsSettings, common, ALS_RETRAIN_INTERVAL_S=0)))
        running["gateway"] = start_app(create_gateway(service_settings(
            GatewaySettings, common,
            RETRIEVER_URL=running["retriever"].url, EXPLAINER_URL=running["explainer"].url,
            ALS_URL=running["als"].url, GATEWAY_CACHE_TTL_S=0)), ready_path="/readyz")
        yield Stack(urls={name: r.url for name, r in running.items()}, users=users, items=items)
    finally:
        for r in reversed(list(running.values())):
            r.stop()


@pytest.fixture(scope="package")
def http() -> Iterator[requests.Session]:
    """One pooled HTTP session for every fuzz request (a fresh connection per case costs more than the case)."""
    with requests.Session() as session:
        yield session
