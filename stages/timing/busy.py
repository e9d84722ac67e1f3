"""The busy check: other processes' CPU time over a timed window, told apart from our own.

The 1-minute load average counts the stage's own threads (two threads on two cores read as a
busy machine) and lags by a minute. Here, over a window, the whole machine's busy CPU time (from
``/proc/stat`` through psutil: every state but idle and I/O wait) minus the CPU time of this
process and of every process it started (its threads, its live children, and the children it
reaped during the window) is what the other processes used. Divided by the window's wall time it
is in cores: 0.5 means another process kept half a core busy while we were timing.

A window whose ``others_cores`` exceeds ``timing.busy_cores`` is contaminated: the timing stage
reruns the arm (``timing.retries``) and then drops it, and counts both.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import psutil


def system_busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (all states but idle and I/O wait)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def tree_seconds(process: psutil.Process) -> float:
    """CPU seconds of ``process`` (all its threads), the children it reaped, and its live descendants."""
    own = process.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:  # ended between the listing and the reading: its parent reaps it
            continue
        total += times.user + times.system
    return float(total)


@dataclass(frozen=True)
class Window:
    seconds: float  # wall time
    own_cores: float  # this process tree's CPU time / wall time
    others_cores: float  # everyone else's CPU time / wall time

    def contaminated(self, limit: float) -> bool:
        return self.others_cores > limit

    def to_dict(self) -> dict[str, float]:
        return {key: round(value, 4) for key, value in asdict(self).items()}


class BusyMeter:
    """``with BusyMeter() as meter: ...`` then ``meter.window``: the CPU accounting of the block."""

    def __init__(self, process: psutil.Process | None = None) -> None:
        self.process = process or psutil.Process()
        self.window: Window | None = None

    def __enter__(self) -> BusyMeter:
        self.started = time.perf_counter()
        self.system, self.own = system_busy_seconds(), tree_seconds(self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        own = tree_seconds(self.process) - self.own
        system = system_busy_seconds() - self.system
        seconds = max(time.perf_counter() - self.started, 1e-9)
        self.window = Window(seconds, own / seconds, max(system - own, 0.0) / seconds)
