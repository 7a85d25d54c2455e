"""Torch's CPU threads follow the cores other programs leave free (revlib.modeling.threads)."""

from __future__ import annotations

import pytest
import torch

from revlib.modeling import threads


@pytest.fixture
def machine(monkeypatch):
    """A 2-core machine whose /proc counters the test advances: (machine busy, total, own) jiffies."""
    state = {"busy": 0, "total": 0, "own": 0, "clock": 0.0}
    monkeypatch.setattr(threads, "_machine_busy_jiffies", lambda: (state["busy"], state["total"]))
    monkeypatch.setattr(threads, "_own_jiffies", lambda: state["own"])
    monkeypatch.setattr(threads.time, "monotonic", lambda: state["clock"])
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.POLICY_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)

    def second(own_cores: float, other_cores: float) -> None:
        state["clock"] += 1.0
        state["total"] += 200  # 100 jiffies a second on each of 2 cores
        state["own"] += round(100 * own_cores)
        state["busy"] += round(100 * (own_cores + other_cores))

    yield second
    torch.set_num_threads(before)


def test_auto_gives_a_core_back_while_another_program_is_busy_and_takes_it_again(machine):
    gov = threads.LoadAwareThreads()
    assert gov.tick() == 2  # first sample: nothing to compare yet, torch's default
    machine(own_cores=2.0, other_cores=0.0)
    assert gov.tick() == 2 and gov.others == 0.0  # quiet: torch's default
    machine(own_cores=1.0, other_cores=1.0)
    assert gov.tick() == 1 and torch.get_num_threads() == 1 and gov.others == pytest.approx(1.0)
    machine(own_cores=1.0, other_cores=0.2)  # the other program stopped
    assert gov.tick() == 2 and torch.get_num_threads() == 2


def test_ticks_within_the_interval_keep_the_count(machine):
    gov = threads.LoadAwareThreads(interval_s=5.0)
    gov.tick()
    machine(own_cores=1.0, other_cores=1.0)
    assert gov.tick() == 2  # one second after the first sample: too soon to read


def test_torch_policy_and_fixed_counts_never_follow_the_load(machine, monkeypatch):
    monkeypatch.setenv(threads.POLICY_ENV, "torch")
    gov = threads.LoadAwareThreads()
    gov.tick()
    machine(own_cores=1.0, other_cores=1.0)
    assert gov.tick() == 2
    monkeypatch.setenv(threads.POLICY_ENV, "1")
    assert threads.LoadAwareThreads().tick() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(threads.POLICY_ENV, "auto")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's own count is respected
    assert threads.LoadAwareThreads().policy == "1"
    monkeypatch.setenv(threads.POLICY_ENV, "many")
    with pytest.raises(ValueError, match="REVLIB_THREADS='many'"):
        threads.LoadAwareThreads()
