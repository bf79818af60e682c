"""Helpers shared by the benchmark scripts: machine description and running one bench as a child process."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu() -> str:
    if not shutil.which("nvidia-smi"):
        return "none"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        return out.replace("\n", "; ") or "none"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
        return (out.stdout.strip() or "unknown") + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_description() -> dict[str, str]:
    """What the figures were measured on (printed at the top of every results table)."""
    ram = ram_gib()
    return {
        "CPU": cpu_model(),
        "Cores (usable)": f"{usable_cores()} of {os.cpu_count()}",
        "RAM": f"{ram:.1f} GiB" if ram else "unknown",
        "GPU": gpu(),
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
        "torch / pyspark / faiss": f"{version('torch')} / {version('pyspark')} / {version('faiss-cpu')}",
        "Load average at start (1/5/15 min)": load_average(),
        "Commit": git_commit(),
        "Date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


@dataclass
class BenchResult:
    name: str
    command: list[str]
    status: str  # ok | failed | timeout | skipped
    seconds: float
    output: str
    reason: str = ""


def run_bench(name: str, command: list[str], *, timeout_s: float,
              env: dict[str, str] | None = None) -> BenchResult:
    """Run one bench in its own process group; a failure or timeout is a result, never an exception."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, _ = proc.communicate()
        return BenchResult(name, command, "timeout", time.perf_counter() - started, out or "",
                           reason=f"ran past {timeout_s:.0f} s and was stopped")
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = [ln for ln in (out or "").strip().splitlines() if ln.strip()]
        return BenchResult(name, command, "failed", seconds, out or "",
                           reason=f"exit {proc.returncode}: {tail[-1][:300] if tail else 'no output'}")
    return BenchResult(name, command, "ok", seconds, out or "")
