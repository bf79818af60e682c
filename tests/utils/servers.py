"""Run real service apps with uvicorn in a background thread on a free port (tests only)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from shared.broker import free_port


@dataclass
class Running:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_app(
    app: FastAPI, *, port: int | None = None, ready_path: str = "/healthz", timeout_s: float = 120.0
) -> Running:
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"server on port {port} exited during start-up")
        try:
            if server.started and httpx.get(url + ready_path, timeout=1.0).status_code < 500:
                return Running(url, server, thread)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.should_exit = True
    raise RuntimeError(f"server on port {port} did not start within {timeout_s}s")


@contextmanager
def serving(app: FastAPI, **kwargs: object) -> Iterator[Running]:
    running = start_app(app, **kwargs)  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.stop()


def dead_url() -> str:
    """A URL where nothing listens (a stopped dependency)."""
    return f"http://127.0.0.1:{free_port()}"
