"""Reading a field from the record shapes that travel through the code: dicts, ORM rows, pydantic
models, dataclasses and pandas rows (where a missing number is NaN)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def get_field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for a mapping, else ``obj.name``; ``default`` when absent, None or NaN."""
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value
