"""A running recsys stack for end-to-end tests: every service, consumer and worker as its own
``recsys ...`` process (the fixture that starts one is in ``tests/e2e/conftest.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECSYS = str(Path(sys.executable).parent / "recsys")
SERVICES = ("ingest", "retriever", "explainer", "als", "gateway", "dashboard")


@dataclass
class Stack:
    urls: dict[str, str]
    env: dict[str, str]
    logs: Path
    data: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    warm_user: str = ""
    n_items: int = 0

    def start(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [RECSYS, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def log_tail(self, name: str, n: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


def wait_until(what: str, check: Any, *, timeout_s: float, every_s: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError with the last result otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # still starting
            last = e
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
