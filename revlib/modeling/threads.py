"""Torch's CPU threads, sized to the cores other programs leave free.

Torch's intra-op pool spins at its barriers: when another program takes one of two cores, each step waits on the
descheduled thread, and training on 2 cores ran at 0.36x of its quiet speed beside one busy process (one thread:
0.65x). So, on the CPU, revlib measures what other processes use between steps (from /proc: the machine's busy
time less this process's own) and runs torch on the cores left, never fewer than one, never more than torch's
default; on a quiet machine that is torch's default. `benchmarks/busy_machine.py` measures the policies.

The policy is chosen by REVLIB_THREADS: `auto` (the default), `torch` (torch's own count, never changed) or a
number (fixed). An OMP_NUM_THREADS set by the user is respected as a fixed count.
"""

from __future__ import annotations

import os
import time

import torch

POLICY_ENV = "REVLIB_THREADS"


def _machine_busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot; None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _own_jiffies() -> int | None:
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime of every thread of this process


class LoadAwareThreads:
    """Call `tick()` between steps on the thread that runs torch (set_num_threads is per calling thread)."""

    def __init__(self, policy: str | None = None, interval_s: float = 0.5):
        chosen = policy or os.environ.get(POLICY_ENV, "auto")
        if os.environ.get("OMP_NUM_THREADS") and policy is None and chosen == "auto":
            chosen = os.environ["OMP_NUM_THREADS"]
        if chosen not in ("auto", "torch") and not chosen.isdigit():
            raise ValueError(f"{POLICY_ENV}={chosen!r}: use auto, torch or a number of threads")
        self.policy = chosen
        self.most = torch.get_num_threads()
        self.interval_s = interval_s
        self.threads = self.most
        self.others = 0.0
        self._last: tuple[float, tuple[int, int], int] | None = None
        if chosen.isdigit():
            self._set(max(1, int(chosen)))

    def _set(self, n: int) -> None:
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.threads = n

    def others_busy(self) -> float | None:
        """Cores other processes used since the last sample; None until two samples exist (or off Linux)."""
        now, machine, own = time.monotonic(), _machine_busy_jiffies(), _own_jiffies()
        if machine is None or own is None:
            return None
        last, self._last = self._last, (now, machine, own)
        if last is None:
            return None
        total = machine[1] - last[1][1]
        if total <= 0:
            return None
        cores = os.cpu_count() or 1
        # busy jiffies of all CPUs as a share of all CPUs' jiffies, in cores, less this process's own
        busy = (machine[0] - last[1][0]) / total * cores
        own_cores = (own - last[2]) / max(total / cores, 1)
        return max(0.0, busy - own_cores)

    def tick(self) -> int:
        if self.policy != "auto":
            return self.threads
        if self._last is not None and time.monotonic() - self._last[0] < self.interval_s:
            return self.threads
        others = self.others_busy()
        if others is not None:
            self.others = others
            # another program using more than half a core takes one of ours
            self._set(max(1, min(self.most, round(self.most - others))))
        return self.threads


_SHARED: LoadAwareThreads | None = None


def shared() -> LoadAwareThreads:
    """The process's one governor (training, scoring and sampling tick the same one)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = LoadAwareThreads()
    return _SHARED
