"""shared.llm.ForegroundGate: background LLM work pauses while normal-priority work keeps the machine
busy, never longer than its cap (pure logic over /proc/stat readings)."""
from __future__ import annotations

import time

import pytest

import shared.llm as llm


def _fake_stat(monkeypatch: pytest.MonkeyPatch, busy_share: list[float]) -> None:
    """Each read advances the machine by 1 s of CPU time, ``busy_share[0]`` of it normal-priority."""
    state = {"busy": 0.0, "total": 0.0}

    def times() -> tuple[float, float]:
        state["busy"] += busy_share[0]
        state["total"] += 1.0
        return state["busy"], state["total"]

    monkeypatch.setattr(llm, "_cpu_times", times)


def test_the_gate_pauses_while_the_machine_is_busy_and_at_most_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    share = [0.9]
    _fake_stat(monkeypatch, share)
    gate = llm.ForegroundGate(busy=0.5, max_pause_s=0.2, window_s=0.01)
    gate.pause(new_prompt=True)  # the first reading only sets the baseline
    time.sleep(0.02)  # a window later
    slept = gate.pause()
    assert 0.15 <= slept <= 0.2  # busy all along: paused, but never past the prompt's cap
    time.sleep(0.02)
    assert gate.pause() == 0.0  # between tokens of the same prompt: its budget is spent
    time.sleep(0.02)
    assert gate.pause(new_prompt=True) >= 0.15  # the next prompt has its own
    share[0] = 0.1  # the services went quiet
    time.sleep(0.02)
    assert gate.pause() == 0.0


def test_off_and_outside_the_workers_nothing_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_stat(monkeypatch, [1.0])
    assert llm.ForegroundGate(busy=0.0, max_pause_s=5.0).pause() == 0.0
    monkeypatch.setattr(llm, "_GATE", None)
    assert llm.foreground_pause() == 0.0
    import torch

    threads = torch.get_num_threads()
    try:
        gate = llm.yield_to_foreground(busy=0.5, max_pause_s=0.05)
        assert gate is not None and llm._GATE is gate
        assert torch.get_num_threads() == 1  # the worker's encoder leaves the other cores to the services
    finally:
        torch.set_num_threads(threads)
    assert llm.yield_to_foreground(busy=0.0, max_pause_s=1.0) is None and llm._GATE is None


def test_cpu_times_read_the_machine() -> None:
    times = llm._cpu_times()
    assert times is not None and 0 <= times[0] <= times[1]
