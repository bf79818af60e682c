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


def _yielding(*, busy: float, max_pause_s: float) -> tuple[llm.ForegroundGate | None, int]:
    """``yield_to_foreground`` as a worker calls it: (the gate, torch's threads then); this process'
    torch threads are restored after."""
    import torch

    threads = torch.get_num_threads()
    try:
        return llm.yield_to_foreground(busy=busy, max_pause_s=max_pause_s), torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)


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
    gate, threads = _yielding(busy=0.5, max_pause_s=0.05)
    assert gate is not None and llm._GATE is gate
    assert threads == 1  # the worker's encoder leaves the other cores to the services
    assert llm.yield_to_foreground(busy=0.0, max_pause_s=1.0) is None and llm._GATE is None


def test_cpu_times_read_the_machine() -> None:
    times = llm._cpu_times()
    assert times is not None and 0 <= times[0] <= times[1]


def test_a_worker_shutting_down_stops_pausing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's warm shutdown (SIGTERM) ends every pause at once: the job in hand finishes within the
    stop's grace instead of waiting out its pause budget and being killed."""
    from celery.signals import worker_shutting_down

    _fake_stat(monkeypatch, [1.0])  # busy all along
    monkeypatch.setattr(llm, "_GATE", None)
    gate, _ = _yielding(busy=0.5, max_pause_s=5.0)
    assert gate is not None
    gate.window_s = 0.01
    gate.pause(new_prompt=True)
    time.sleep(0.02)
    try:
        worker_shutting_down.send(sender="test-worker", sig="SIGTERM", how="Warm", exitcode=0)
        started = time.monotonic()
        assert gate.pause(new_prompt=True) == 0.0 and time.monotonic() - started < 0.5
    finally:
        llm._STOPPING.clear()
        monkeypatch.setattr(llm, "_GATE", None)
