"""One running stack for the whole e2e package: every service (the dashboard too), consumer and worker
as its own process (`recsys ...`) on free ports against the session's real PostgreSQL, broker and
Redis. It ingests a small synthetic set, trains ALS, waits for the index and a warm user's profile.

Package-scoped: ``test_dashboard.py`` (browser) and ``test_stack.py`` (HTTP) share it, so the ~3 minute
start is paid once; it stops before other areas' tests run (they must not share its CPU or DB).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.broker import free_port
from shared.config import CommonSettings
from tests.utils.databases import temporary_database
from tests.utils.stack import SERVICES, Stack, wait_until


@pytest.fixture(scope="package")
def e2e_db_url() -> Iterator[str]:
    """The stack's own database: its ingest relay must not publish other tests' outbox rows."""
    with temporary_database("recsys_e2e") as url:
        yield url


@pytest.fixture(scope="package")
def e2e_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-home")


@pytest.fixture(scope="package")
def stack(
    settings: CommonSettings, e2e_db_url: str, e2e_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from shared.events import ALL_TOPICS
    from shared.kafka import ensure_topics
    from tools.synth import write

    home = e2e_home
    ports = {name: free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **os.environ,
        "RECSYS_ENVIRONMENT": "test",
        "RECSYS_HOME": str(home),
        "RECSYS_DATABASE_URL": e2e_db_url,
        "RECSYS_KAFKA_BOOTSTRAP": settings.KAFKA_BOOTSTRAP,
        "RECSYS_CELERY_BROKER_URL": settings.celery_broker_url,
        "RECSYS_CELERY_RESULT_BACKEND": settings.celery_result_backend,
        **{f"RECSYS_{name.upper()}_URL": url for name, url in urls.items()},
        # A loaded CI box: small profiler tasks and short generation budgets give the first profiles
        # in minutes (the profiler's own settings; the model is still the real default LLM).
        "RECSYS_LLM_TIMEOUT_S": "60",
        # No ALS Celery worker in this stack: the ALS service trains in a thread when asked over HTTP.
        "RECSYS_ALS_TRAIN_EXECUTOR": "thread",
        "RECSYS_PROFILER_USERS_PER_TASK": "2",
        "RECSYS_LLM_BATCH_SIZE": "2",
        "RECSYS_PROFILER_MAX_NEW_TOKENS": "96",
        "RECSYS_PROFILER_SUMMARY_TOKENS": "64",
    }
    data = tmp_path_factory.mktemp("e2e-data")
    counts = write(data, users=30, items=50, seed=11)
    st = Stack(urls=urls, env=env, logs=home, data=data, n_items=counts["items"])
    ensure_topics(settings, [settings.topic(t) for t in ALL_TOPICS])
    try:
        for name in SERVICES:
            st.start(name, "serve", name, "--port", str(ports[name]))
        st.start("indexer", "consume", "retriever-indexer")
        st.start("profiler-trigger", "consume", "profiler-trigger")
        st.start("profiler-worker", "worker", "profiler")
        st.start("explainer-worker", "worker", "explainer")  # the explainer's LLM (the service holds none)
        for name in SERVICES:
            wait_until(
                f"{name} /healthz",
                lambda n=name: httpx.get(f"{urls[n]}/healthz", timeout=2).status_code == 200,
                timeout_s=240,
            )
        from tools.ingest import main as ingest

        assert ingest(reviews=data / "reviews.jsonl", meta=data / "meta.jsonl", url=urls["ingest"]) == 0
        # Trained the way `recsys demo` does it: through the ALS service's API, like any client.
        from tools.demo import train_als

        assert train_als(CommonSettings(ALS_URL=urls["als"]), timeout_s=900), st.log_tail("als")
        wait_until(
            "items indexed",
            lambda: (
                httpx.get(f"{urls['retriever']}/readyz", timeout=5).json()["checks"]["index"]["size"]
                >= st.n_items
            ),
            timeout_s=300,
        )
        counts_by_user = Counter(json.loads(line)["user_id"] for line in open(data / "reviews.jsonl"))
        candidates = [u for u, n in counts_by_user.most_common(12) if n >= 3]

        def profiled_warm_user() -> str | None:
            for u in candidates:
                r = httpx.get(f"{urls['gateway']}/v1/users/{u}/profile", timeout=5)
                if r.status_code == 200 and r.json().get("status") == "ready":
                    return u
            return None

        st.warm_user = wait_until("a warm user's profile", profiled_warm_user, timeout_s=900, every_s=5)
        yield st
    except BaseException:
        for name in list(st.procs):
            sys.stderr.write(f"--- {name} log tail ---\n{st.log_tail(name)}\n")
        raise
    finally:
        for name in list(st.procs):
            st.stop(name)
