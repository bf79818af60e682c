"""Helpers for the chart tests: where the chart is, values builders, and a parsed rendering."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "recsys"
GKE_VALUES = CHART / "values-gke.yaml"
RELEASE = "recsys"
NAMESPACE = "recsys"
KUBE_VERSION = "1.30.0"

# Sentinels put into every secret field: none may appear in a ConfigMap.
SECRET_SENTINELS = {
    "databaseUrl": "postgresql+psycopg://recsys:db-s3cret-SENTINEL@10.1.2.3:5432/recsys",
    "celeryBrokerUrl": "redis://:redis-s3cret-SENTINEL@10.1.2.4:6379/0",
    "kafkaSaslUsername": "kafka-user-SENTINEL",
    "kafkaSaslPassword": "kafka-s3cret-SENTINEL",
    "apiKeys": ["api-key-one-SENTINEL", "api-key-two-SENTINEL"],
    "adminKey": "admin-s3cret-SENTINEL",
    "hfToken": "hf_token_SENTINEL",
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base`` like Helm coalesces values files."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_gke_values() -> dict[str, Any]:
    return yaml.safe_load(GKE_VALUES.read_text())


@dataclass
class Rendered:
    """One rendering of the chart: parsed objects plus the raw manifests."""

    values: dict[str, Any]
    manifests: dict[str, str]
    objects: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        matches = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert matches, f"no {kind} named {name}; have {[o['metadata']['name'] for o in self.of_kind(kind)]}"
        return matches[0]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(kind/name, pod spec) of every workload."""
        for o in self.objects:
            kind, spec = o["kind"], o.get("spec", {})
            if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
                yield f"{kind}/{o['metadata']['name']}", spec["template"]["spec"]
            elif kind == "CronJob":
                yield f"{kind}/{o['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]["spec"]


def parse_manifests(manifests: dict[str, str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                objects.append(doc)
    return objects


