"""The one way to get a database session: an engine per URL, a sessionmaker, a context manager."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    """One pooled engine per URL per process."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    ping_idle_connections(engine, after_idle_s=PING_AFTER_IDLE_S)
    return engine


# A pooled connection idle longer than this is pinged before use (a dead one is replaced).
PING_AFTER_IDLE_S = 10.0


def ping_idle_connections(engine: Engine, *, after_idle_s: float) -> None:
    """Pessimistic disconnect handling, but only for connections that sat idle.

    ``pool_pre_ping`` costs a round trip on every checkout: a fifth of the round trips of a
    hot read on PostgreSQL, and the retriever makes them on its event loop. Connections used within
    ``after_idle_s`` are handed out as they are; older ones get a ``SELECT 1`` first, and a failed
    ping makes the pool open a fresh connection (SQLAlchemy's ``DisconnectionError`` protocol). A
    server restart while a connection is busy still fails that one statement; SQLAlchemy then
    invalidates the pool, so the next checkout reconnects.
    """

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("recsys_last_checkin")
        if last is not None and time.monotonic() - last < after_idle_s:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            dbapi_conn.rollback()
        except Exception as e:
            raise exc.DisconnectionError(f"stale pooled connection: {type(e).__name__}") from e

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_conn: Any, record: Any) -> None:
        record.info["recsys_last_checkin"] = time.monotonic()


@lru_cache(maxsize=16)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_connection(url: str) -> Iterator[Connection]:
    """A plain Core connection for the hot read paths (one user's profile and history, one top-N row):
    no ORM session, identity map or unit of work, which cost more than the small read itself."""
    with get_engine(url).connect() as conn:
        # Autocommit: no BEGIN and reset-on-return ROLLBACK round trips around two or three SELECTs
        # (on PostgreSQL they were half of the round trips of the gateway's user read). Each statement
        # still sees a consistent snapshot of its own; none of these readers needs one across them.
        # (SQLite: a local call, and switching its isolation level costs more than it saves.)
        if conn.dialect.name != "sqlite":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


async def run_read(url: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a short blocking read for an event loop: on SQLite (a local file, well under a millisecond)
    right here, since under load a thread hop waits milliseconds for the interpreter lock (measured on
    the gateway at 32 clients: the user read 15 ms at the median through ``asyncio.to_thread``); on a
    networked database in a worker thread, so the loop never waits on the network."""
    if url.startswith("sqlite"):
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


def upgrade_database(url: str) -> None:
    """Run Alembic migrations up to head on the given database."""
    from alembic import command
    from alembic.config import Config

    here = Path(__file__).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(here / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


async def database_check_async(url: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """:func:`database_check` in a worker thread under ``timeout_s`` (for async readiness endpoints)."""
    import asyncio

    try:
        return await asyncio.wait_for(asyncio.to_thread(database_check, url), timeout=timeout_s)
    except TimeoutError:
        return {"ok": False, "error": f"TimeoutError: no answer in {timeout_s:g} s"}


def database_check(url: str) -> dict[str, Any]:
    """The one readiness check of a database: ``{"ok": True}`` or ``{"ok": False, "error": ...}``.

    Blocking; async callers run it in a thread under their own timeout.
    """
    try:
        with get_engine(url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True}
    except Exception as exc:  # readiness reports the failure, it never raises
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
