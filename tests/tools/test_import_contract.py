"""The import contract (pyproject's [tool.importlinter]) holds and covers every service package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_service_package_is_in_the_independence_contract() -> None:
    services = sorted(
        f"services.{p.name}" for p in (ROOT / "services").iterdir() if (p / "__init__.py").is_file()
    )
    independence = [c for c in _contracts() if c["type"] == "independence"]
    assert len(independence) == 1
    assert sorted(independence[0]["modules"]) == services


def test_shared_and_services_may_not_import_tools_and_shared_not_services() -> None:
    forbidden = {tuple(c["source_modules"]): set(c["forbidden_modules"]) for c in _contracts()
                 if c["type"] == "forbidden"}
    assert forbidden[("shared",)] >= {"services", "tools"}
    assert "tools" in forbidden[("shared", "services")]


def test_lint_imports_passes() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken" in done.stdout
