"""ALS test fixtures: one local[2] SparkSession, an isolated migrated PostgreSQL DB, planted-taste data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from services.als.config import AlsSettings
from shared.config import CommonSettings
from shared.outbox import close_publishers
from tests.als.synth import planted_ratings
from tests.utils.databases import temporary_database
from tests.utils.settings import service_settings


@pytest.fixture(scope="session")
def als_db_url() -> Iterator[str]:
    """The ALS tests own the live-model state, so they get their own migrated database."""
    with temporary_database("recsys_test_als") as url:
        yield url


@pytest.fixture(scope="session")
def als_settings(settings: CommonSettings, als_db_url: str, session_home: Path) -> Iterator[AlsSettings]:
    yield service_settings(
        AlsSettings,
        settings,
        DATABASE_URL=als_db_url,
        HOME=session_home / "als-home",
        SPARK_MASTER="local[2]",
        SPARK_SHUFFLE_PARTITIONS=2,
        SPARK_DRIVER_MEMORY="1g",
        ALS_RANK=8,
        ALS_MAX_ITER=8,
        ALS_REG_PARAM=0.1,
        ALS_TOP_N=20,
        ALS_TRAIN_EXECUTOR="thread",
        ALS_RETRAIN_INTERVAL_S=0,
        ALS_LOCK_TTL_S=60,
        # the neighbour lists cost a few Spark jobs per run: only test_neighbours.py computes them
        ALS_NEIGHBOURS=False,
    )
    # Training publishes models.v1 through shared.outbox.publish, which keeps a producer per broker:
    # close it while the session broker is still up.
    close_publishers()


@pytest.fixture(scope="session")
def spark(als_settings: AlsSettings) -> Iterator[object]:
    from services.als.spark import get_spark, stop_spark

    als_settings.ensure_home()
    session = get_spark(als_settings)
    yield session
    stop_spark()


@pytest.fixture(scope="session")
def ratings() -> pd.DataFrame:
    return planted_ratings(users=300, items=200, seed=7)


@pytest.fixture(scope="session")
def seeded_db(als_settings: AlsSettings, ratings: pd.DataFrame) -> pd.DataFrame:
    """The planted ratings stored as reviews (the training job reads the reviews table)."""
    from shared.db import session_scope
    from shared.models import Review

    with session_scope(als_settings.database_url) as s:
        s.add_all(
            Review(
                user_id=r.user_id,
                parent_asin=r.parent_asin,
                timestamp=int(r.timestamp),
                rating=float(r.rating),
            )
            for r in ratings.itertuples()
        )
    return ratings
