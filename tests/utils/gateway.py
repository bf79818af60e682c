"""Gateway fixtures (a plugin of the root conftest): seeded PostgreSQL, a real explainer app, gateway settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from services.explainer.app import create_app as create_explainer
from services.explainer.config import ExplainerSettings
from services.gateway.config import GatewaySettings
from shared.config import CommonSettings
from shared.db import session_scope
from shared.models import Item, Profile, Review
from tests.utils.servers import Running, dead_url, start_app
from tests.utils.settings import service_settings


@dataclass
class Seeded:
    prefix: str
    warm_user: str
    cold_profile_user: str
    history: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def seeded(pg_url: str) -> Seeded:
    """40 items (the first 10 very popular), one warm user with 6 reviews and a ready profile,
    one user whose profile is cold_start."""
    p = f"G{uuid.uuid4().hex[:6].upper()}"
    data = Seeded(prefix=p, warm_user=f"{p}WARM", cold_profile_user=f"{p}COLDPROF")
    nouns = ["Wig", "Comb", "Brush", "Bonnet", "Cap", "Mug", "Lamp", "Kettle", "Scarf", "Candle"]
    with session_scope(pg_url) as s:
        for i in range(40):
            asin = f"{p}I{i:03d}"
            data.items.append(asin)
            s.add(
                Item(
                    parent_asin=asin,
                    title=f"Soft {nouns[i % 10]} Model {i}, cotton finish",
                    main_category="All Beauty" if i % 2 else "Home & Kitchen",
                    average_rating=4.0 + (i % 10) / 10,
                    rating_number=10_000_000 - i * 1000 if i < 10 else i,
                    features=[f"Soft cotton {nouns[i % 10].lower()}", "Easy care"],
                )
            )
        for j in range(6):
            asin = data.items[j]  # the warm user reviewed six of the most popular items
            data.history.append(asin)
            s.add(
                Review(
                    user_id=data.warm_user,
                    parent_asin=asin,
                    timestamp=1_700_000_000_000 + j,
                    rating=5.0,
                    title="love it",
                    text="soft and comfortable",
                )
            )
        s.add(
            Profile(
                user_id=data.warm_user,
                version=2,
                status="ready",
                source="llm",
                preferred_products=["wigs", "combs"],
                liked_features=["soft cotton"],
                dislikes=["scratchy"],
                potential_interests=["bonnet"],
                summary="The customer buys soft cotton hair accessories. "
                "They value softness. They will likely buy a bonnet.",
                n_reviews=6,
            )
        )
        s.add(
            Profile(
                user_id=data.cold_profile_user,
                version=1,
                status="cold_start",
                source="extractive",
                summary="",
                n_reviews=1,
            )
        )
        s.add(
            Review(
                user_id=data.cold_profile_user,
                parent_asin=data.items[20],
                timestamp=1_700_000_000_000,
                rating=3.0,
                title="ok",
                text="fine",
            )
        )
    return data


@pytest.fixture(scope="session")
def explainer_server(settings: CommonSettings) -> Iterator[Running]:
    """The real explainer app (template-only: fast) served on a free port."""
    explainer_settings = service_settings(ExplainerSettings, settings, EXPLAINER_BACKEND="template")
    running = start_app(create_explainer(explainer_settings, reasoner=None))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def gateway_settings(settings: CommonSettings, explainer_server: Running) -> GatewaySettings:
    """Gateway settings: the real explainer; retriever and ALS not running (their URLs refuse)."""
    return service_settings(
        GatewaySettings,
        settings,
        EXPLAINER_URL=explainer_server.url,
        RETRIEVER_URL=dead_url(),
        ALS_URL=dead_url(),
        GATEWAY_EXPLAINER_TIMEOUT_S=2.0,
        GATEWAY_RETRIEVER_TIMEOUT_S=1.0,
        GATEWAY_ALS_TIMEOUT_S=0.5,
        GATEWAY_CACHE_TTL_S=0,  # every request computes; the cache has its own test
        GATEWAY_PRECOMPUTE=False,  # no profiles.v1 / models.v1 listener: tests/gateway/test_precompute.py
    )
