"""shared.db: migrations on SQLite and PostgreSQL, and the connection pool against server-side kills."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import inspect

from shared.db import get_engine, upgrade_database


def test_migrations_run_on_sqlite_and_postgres(tmp_path, pg_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_database(sqlite_url)
    for url in (sqlite_url, pg_url):
        tables = set(inspect(get_engine(url)).get_table_names())
        assert {"reviews", "items", "outbox", "profiles", "als_models", "explanations"} <= tables


@pytest.mark.parametrize("after_idle_s", [0.0, 3600.0])
def test_pool_replaces_connections_the_server_killed(pg_url: str, after_idle_s: float) -> None:
    """Idle pooled connections are pinged before use; busy ones are not (no round trip per checkout),
    so a server-side kill costs at most one failed statement, after which the pool reconnects."""
    from sqlalchemy import create_engine, exc, text

    from shared.db import ping_idle_connections

    engine = create_engine(pg_url, pool_size=2, max_overflow=0)
    ping_idle_connections(engine, after_idle_s=after_idle_s)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            mine = c.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as a:
            assert a.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": mine}).scalar() is True
        time.sleep(0.2)
        if after_idle_s == 0.0:  # pinged at checkout: the dead connection is replaced transparently
            with engine.connect() as c:
                assert c.execute(text("SELECT pg_backend_pid()")).scalar() != mine
        else:  # reused without a ping: that statement fails once, then the pool has reconnected
            with pytest.raises(exc.OperationalError), engine.connect() as c:
                c.execute(text("SELECT 1"))
            with engine.connect() as c:
                assert c.execute(text("SELECT pg_backend_pid()")).scalar() != mine
    finally:
        engine.dispose()
        admin.dispose()


def test_database_check_reports_reachable_and_unreachable_databases(pg_url: str) -> None:
    import asyncio

    from shared.broker import free_port
    from shared.db import database_check, database_check_async

    assert database_check(pg_url) == {"ok": True}
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2"
    down = database_check(dead)
    assert down["ok"] is False and down["error"].startswith("OperationalError")
    assert asyncio.run(database_check_async(pg_url)) == {"ok": True}
    assert asyncio.run(database_check_async(dead, timeout_s=5.0))["ok"] is False


def test_run_read_keeps_sqlite_reads_on_the_loop_and_sends_networked_ones_to_a_thread() -> None:
    import asyncio
    import threading

    from shared.db import run_read

    async def main() -> tuple[int, int, int]:
        here = threading.get_ident()
        lite = await run_read("sqlite:///x.db", threading.get_ident)
        pg = await run_read("postgresql+psycopg://h/db", threading.get_ident)
        return here, lite, pg

    here, lite, pg = asyncio.run(main())
    assert lite == here and pg != here
