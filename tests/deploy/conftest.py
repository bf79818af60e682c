"""Render the Helm chart once per values combination (real Helm via helm-python-sdk) and share the result."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .helpers import CHART, NAMESPACE, RELEASE, Rendered, helm, parse_manifests


@pytest.fixture(scope="session")
def render() -> Iterator[Callable[[dict[str, Any] | None], Rendered]]:
    """Render with the given values (merged over nothing: Helm applies the chart defaults); cached."""
    cache: dict[str, Rendered] = {}
    chart = helm.Chart.load(CHART)

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        key = json.dumps(values or {}, sort_keys=True)
        if key not in cache:
            chart.validate_schema(values or {})
            manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
            objects = parse_manifests(manifests)
            cache[key] = Rendered(values=values or {}, manifests=manifests, objects=objects)
        return cache[key]

    yield _render
    chart.close()
