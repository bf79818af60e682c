"""The local stack: ``recsys up`` / ``down`` / ``status``.

``up`` starts the dev broker (unless one answers at ``KAFKA_BOOTSTRAP``), migrates the database,
creates the topics, then starts every service, consumer and worker in the background, each in its
own process group with ``HOME/logs/<name>.log`` and ``HOME/pids/<name>.pid``, and waits until each
HTTP service answers ``/healthz`` and each background process is still alive after a grace period.
It is idempotent (a process whose pid is alive with the expected command line is not started
again) and reports per process what failed, with the last lines of its log.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import typer

from shared.config import CommonSettings, get_settings
from tools.processes import CONSUMERS, HTTP_SERVICES, WORKERS

BACKGROUND_GRACE_S = 5.0  # a consumer/worker still alive after this long counts as started
START_TIMEOUT_S = 300.0  # HTTP services load models in their lifespan: give them time
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 15
BROKER = "broker"


@dataclass(frozen=True)
class Proc:
    """One process of the stack: its ``recsys`` arguments, the module it needs, and its URL if HTTP."""

    name: str
    args: tuple[str, ...]
    module: str
    url: str | None = None

    @property
    def marker(self) -> str:
        return " ".join(self.args)


def processes(settings: CommonSettings) -> list[Proc]:
    """Every process of the local stack, in start order."""
    urls = {
        "gateway": settings.GATEWAY_URL,
        "ingest": settings.INGEST_URL,
        "retriever": settings.RETRIEVER_URL,
        "explainer": settings.EXPLAINER_URL,
        "als": settings.ALS_URL,
        "dashboard": settings.DASHBOARD_URL,
    }
    procs: list[Proc] = []
    for name in ("ingest", "retriever", "explainer", "als", "gateway", "dashboard"):
        url = urls[name].rstrip("/")
        parts = urlsplit(url)
        port = parts.port or HTTP_SERVICES[name][1]
        procs.append(
            Proc(
                name,
                ("serve", name, "--host", parts.hostname or "127.0.0.1", "--port", str(port)),
                HTTP_SERVICES[name][0],
                url,
            )
        )
    consumers = {
        "ingest-raw": "ingest-raw",
        "retriever-indexer": "retriever-indexer",
        "profiler-trigger": "profiler-trigger",
        "als-trigger": "als-trigger",
    }
    for name, consumer in consumers.items():
        procs.append(Proc(name, ("consume", consumer), CONSUMERS[consumer].split(":")[0]))
    procs.append(Proc("worker-profiler", ("worker", "profiler"), WORKERS["profiler"][0]))
    procs.append(Proc("worker-explainer", ("worker", "explainer"), WORKERS["explainer"][0]))
    procs.append(Proc("worker-als", ("worker", "als", "--beat"), WORKERS["als"][0]))
    return procs


# -- state on disk ---------------------------------------------------------------------------------


def _home(settings: CommonSettings) -> Path:
    home = settings.HOME.resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "pids").mkdir(parents=True, exist_ok=True)
    return home


def _pid_file(home: Path, name: str) -> Path:
    return home / "pids" / f"{name}.pid"


def _log_file(home: Path, name: str) -> Path:
    return home / "logs" / f"{name}.log"


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat")
    try:  # a zombie is not running
        return state.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def running_pid(home: Path, name: str, marker: str) -> int | None:
    """The pid from the pid file if that process is alive and its command line matches."""
    path = _pid_file(home, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    cmd = _cmdline(pid)
    if cmd is not None and marker not in cmd:
        return None  # the pid was reused by something else
    return pid


def tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def child_env(settings: CommonSettings, home: Path) -> dict[str, str]:
    """The parent's environment plus the settings every child must agree on (absolute HOME)."""
    env = dict(os.environ)
    env.update(
        {
            "RECSYS_HOME": str(home),
            "RECSYS_KAFKA_BOOTSTRAP": settings.KAFKA_BOOTSTRAP,
            "RECSYS_GATEWAY_URL": settings.GATEWAY_URL,
            "RECSYS_INGEST_URL": settings.INGEST_URL,
            "RECSYS_RETRIEVER_URL": settings.RETRIEVER_URL,
            "RECSYS_EXPLAINER_URL": settings.EXPLAINER_URL,
            "RECSYS_ALS_URL": settings.ALS_URL,
            "RECSYS_DASHBOARD_URL": settings.DASHBOARD_URL,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.DATABASE_URL:
        env["RECSYS_DATABASE_URL"] = settings.DATABASE_URL
    return env


def _spawn(argv: list[str], *, log: Path, env: dict[str, str]) -> int:
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=os.getcwd(),
        )
    return proc.pid


# -- broker ----------------------------------------------------------------------------------------


def _bootstrap(settings: CommonSettings) -> tuple[str, int]:
    first = settings.KAFKA_BOOTSTRAP.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def _port_open(host: str, port: int) -> bool:
    from shared.broker import wait_for_port

    return wait_for_port(host, port, timeout_s=0.3)


def start_broker(settings: CommonSettings, home: Path) -> tuple[bool, str]:
    """Start tansu unless a broker answers already; returns (ok, message)."""
    from shared.broker import broker_command, wait_for_port

    host, port = _bootstrap(settings)
    pid = running_pid(home, BROKER, "tansu")
    if pid:
        return True, f"running (pid {pid})"
    if _port_open(host, port):
        return True, f"external broker at {host}:{port}"
    if host not in ("127.0.0.1", "localhost", "0.0.0.0"):
        return False, f"no broker answers at {host}:{port} and it is not local, so none was started"
    try:
        argv = broker_command(host, port)
    except (FileNotFoundError, ImportError) as exc:
        return False, f"cannot start the dev broker: {exc} (install the 'stack' extra)"
    pid = _spawn(argv, log=_log_file(home, BROKER), env=dict(os.environ))
    _pid_file(home, BROKER).write_text(str(pid))
    if not wait_for_port(host, port, timeout_s=20):
        return False, f"broker did not open {host}:{port}\n{tail(_log_file(home, BROKER))}"
    return True, f"started (pid {pid}) at {host}:{port}"


# -- commands --------------------------------------------------------------------------------------


@dataclass
class Started:
    proc: Proc
    pid: int | None
    since: float
    state: str = "starting"  # starting | ok | failed
    detail: str = ""


def _healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing too
        return False


def _select(procs: list[Proc], only: Iterable[str] | None) -> list[Proc]:
    if only is None:
        return procs
    wanted = set(only)
    return [p for p in procs if p.name in wanted]


def up(
    *,
    settings: CommonSettings | None = None,
    only: Iterable[str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> int:
    """Start the stack (or the processes named in ``only``); 0 if every process is up."""
    from shared.db import upgrade_database
    from shared.events import ALL_TOPICS
    from shared.kafka import ensure_topics

    settings = settings or get_settings()
    home = _home(settings)
    failed = 0

    ok, message = start_broker(settings, home)
    typer.echo(f"{'ok  ' if ok else 'FAIL'} {BROKER:18s} {message}")
    if not ok:
        return 1
    try:
        upgrade_database(settings.database_url)
        typer.echo(f"ok   {'database':18s} migrated ({_redact(settings.database_url)})")
    except Exception as exc:
        typer.echo(f"FAIL {'database':18s} migrations failed: {type(exc).__name__}: {exc}")
        return 1
    try:
        ensure_topics(settings, ALL_TOPICS)
        typer.echo(f"ok   {'topics':18s} {len(ALL_TOPICS)} topics")
    except Exception as exc:
        typer.echo(f"FAIL {'topics':18s} {type(exc).__name__}: {exc}")
        return 1

    env = child_env(settings, home)
    python = sys.executable
    started: list[Started] = []
    for proc in _select(processes(settings), only):
        pid = running_pid(home, proc.name, proc.marker)
        if pid:
            started.append(Started(proc, pid, 0.0, detail="already running"))
            continue
        if not _module_exists(proc.module):
            started.append(Started(proc, None, 0.0, "failed", f"module {proc.module} does not exist yet"))
            continue
        pid = _spawn([python, "-m", "tools.cli", *proc.args], log=_log_file(home, proc.name), env=env)
        _pid_file(home, proc.name).write_text(str(pid))
        started.append(Started(proc, pid, time.monotonic()))

    deadline = time.monotonic() + timeout_s
    while any(s.state == "starting" for s in started):
        for s in started:
            if s.state != "starting" or s.pid is None:
                continue
            if not _alive(s.pid):
                s.state, s.detail = "failed", "exited during start-up"
                _pid_file(home, s.proc.name).unlink(missing_ok=True)
            elif s.proc.url is not None:
                if _healthy(s.proc.url):
                    s.state = "ok"
            elif time.monotonic() - s.since >= BACKGROUND_GRACE_S:
                s.state = "ok"
        if time.monotonic() > deadline:
            for s in started:
                if s.state == "starting":
                    s.state, s.detail = (
                        "failed",
                        f"not healthy after {timeout_s:.0f}s (still running, pid {s.pid})",
                    )
            break
        time.sleep(0.5)

    for s in started:
        where = s.proc.url or " ".join(s.proc.args)
        if s.state == "ok":
            extra = f" ({s.detail})" if s.detail else ""
            typer.echo(f"ok   {s.proc.name:18s} pid {s.pid:<7d} {where}{extra}")
        else:
            failed += 1
            typer.echo(f"FAIL {s.proc.name:18s} {s.detail}  [{where}]")
            if s.pid is not None:
                log = _log_file(home, s.proc.name)
                typer.echo(f"     last lines of {log}:")
                typer.echo("\n".join(f"     | {line}" for line in tail(log).splitlines()))
    typer.echo(f"{len(started) - failed}/{len(started)} processes up; logs in {home / 'logs'}")
    return 1 if failed else 0


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # each process leads its own session/group (start_new_session)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def down(*, settings: CommonSettings | None = None) -> int:
    """Stop every process started by ``up`` (SIGTERM, then SIGKILL), then the broker. Always 0."""
    settings = settings or get_settings()
    home = _home(settings)
    targets: list[tuple[str, int]] = []
    markers = {p.name: p.marker for p in processes(settings)} | {BROKER: "tansu"}
    for pid_path in sorted((home / "pids").glob("*.pid")):
        name = pid_path.stem
        pid = running_pid(home, name, markers.get(name, ""))
        if pid is None:
            pid_path.unlink(missing_ok=True)
            continue
        targets.append((name, pid))
    # Services and workers first, the broker last (consumers commit offsets on SIGTERM).
    for group in ([t for t in targets if t[0] != BROKER], [t for t in targets if t[0] == BROKER]):
        for _, pid in group:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(pid) for _, pid in group) and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, pid in group:
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
                typer.echo(f"killed {name} (pid {pid}): no exit {STOP_TIMEOUT_S:.0f}s after SIGTERM")
            else:
                typer.echo(f"stopped {name} (pid {pid})")
            _pid_file(home, name).unlink(missing_ok=True)
    if not targets:
        typer.echo("nothing was running")
    return 0


def status(*, settings: CommonSettings | None = None) -> int:
    """Print process, pid, state, port and health of every stack process. Always 0."""
    settings = settings or get_settings()
    home = _home(settings)
    host, port = _bootstrap(settings)
    rows = [("process", "pid", "state", "port", "health")]
    bpid = running_pid(home, BROKER, "tansu")
    reachable = _port_open(host, port)
    rows.append(
        (
            BROKER,
            str(bpid or "-"),
            "running" if bpid else ("external" if reachable else "stopped"),
            str(port),
            "ok" if reachable else "down",
        )
    )
    for proc in processes(settings):
        pid = running_pid(home, proc.name, proc.marker)
        had_pid = _pid_file(home, proc.name).exists()
        state = "running" if pid else ("dead" if had_pid else "stopped")
        http_port = str(urlsplit(proc.url).port) if proc.url else "-"
        health = "-"
        if proc.url:
            health = "ok" if _healthy(proc.url, 1.0) else "down"
        rows.append((proc.name, str(pid or "-"), state, http_port, health))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    typer.echo(f"home: {home}")
    return 0
