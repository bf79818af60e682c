"""bench/quality.py's seed table: each seed's figures, their mean and the HR@10 range (pure logic)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def quality() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "quality.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def doc(hit: float, ndcg: float) -> dict:
    return {"strategies": {"hybrid": {"overall": {"hit_rate@10": hit, "ndcg@10": ndcg}}}}


def test_the_seed_table_shows_each_seed_the_mean_and_the_range() -> None:
    table = quality().seed_table({"magazines": {42: doc(0.42, 0.31), 1: doc(0.45, 0.33), 2: None}},
                                 ["hybrid"], [42, 1, 2])
    lines = table.splitlines()
    assert lines[0] == "| data set | strategy | seed 42 | seed 1 | seed 2 | mean | HR@10 min-max |"
    # a seed whose run failed shows a dash and is left out of the mean
    assert lines[2] == ("| magazines | hybrid | 0.420 / 0.310 | 0.450 / 0.330 | – | 0.435 / 0.320 "
                        "| 0.420-0.450 |")


def test_a_strategy_no_seed_measured_has_no_mean() -> None:
    table = quality().seed_table({"toys": {42: None}}, ["hybrid"], [42])
    assert table.splitlines()[2] == "| toys | hybrid | – | – | – |"
