"""Evaluation fixtures: small synthetic data sets (tools.synth, planted tastes) and offline settings."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import CommonSettings


@pytest.fixture(scope="session")
def eval_settings(session_home: Path) -> CommonSettings:
    """No LLM (extractive profiles, template reasons), packaged embedding model, state under a temp HOME."""
    return CommonSettings(ENVIRONMENT="test", HOME=session_home, LLM_BACKEND="template")


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tools.synth import write

    out = tmp_path_factory.mktemp("synth-small")
    write(out, users=80, items=40, seed=3)
    return out / "reviews.jsonl", out / "meta.jsonl"


@pytest.fixture(scope="session")
def taste_synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tools.synth import write

    out = tmp_path_factory.mktemp("synth-tastes")
    write(out, users=400, items=120, seed=7)
    return out / "reviews.jsonl", out / "meta.jsonl"
