"""Run real service apps with uvicorn in a background thread on a free port, real service processes,
and a stalled server that accepts connections and never answers (tests only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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


RECSYS = str(Path(sys.executable).parent / "recsys")


@dataclass
class ServiceProcess:
    """``recsys serve NAME`` as its own process (its own process group), on a free port."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown, open connections are reset by the kernel."""
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped (SIGSTOP) process must run to handle SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def start_service_process(
    name: str, env: dict[str, str], log: Path, *, ready_path: str = "/healthz", timeout_s: float = 120.0
) -> ServiceProcess:
    """Start ``recsys serve NAME --port <free>`` with ``env`` (``RECSYS_*`` settings) and wait until
    ``ready_path`` answers below 500; the process is stopped again if it does not."""
    port = free_port()
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [RECSYS, "serve", name, "--port", str(port)],
        env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    out.close()
    running = ServiceProcess(name, f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited during start-up:\n{running.log_tail()}")
        try:
            if httpx.get(running.url + ready_path, timeout=1.0).status_code < 500:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    running.stop()
    raise RuntimeError(f"{name} did not start within {timeout_s}s:\n{running.log_tail()}")


@dataclass
class StalledServer:
    """Listens and accepts every connection, then never reads nor answers (a hung service)."""

    url: str
    accepted: int = 0
    _sock: socket.socket | None = None
    _conns: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)


@contextmanager
def stalled_server() -> Iterator[StalledServer]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.1)
    server = StalledServer(url=f"http://127.0.0.1:{sock.getsockname()[1]}", _sock=sock)

    def serve() -> None:
        while not server._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setblocking(False)
            server._conns.append(conn)  # held open, never answered: the caller's timeout must fire
            server.accepted += 1

    thread = threading.Thread(target=serve, name="stalled-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server._stop.set()
        thread.join(timeout=5)
        for conn in server._conns:
            conn.close()
        sock.close()
