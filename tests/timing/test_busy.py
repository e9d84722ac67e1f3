"""The busy check (stages/timing/busy.py) counts other processes' CPU time, never the stage's own.

Other engineers' tests share this machine, so no test assumes it idle: each compares the check's
figures with CPU time measured independently (the spinner's own, or every other process's)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from stages.common.params import load_params
from stages.timing import spinner
from stages.timing.busy import BusyMeter
from tests.timing.worker import COMMAND

TICK = 0.03  # CPU times are counted in 10 ms ticks; three readings each side


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def spin_for(process: psutil.Process, seconds: float) -> None:
    """Wait (polling) until ``process`` has used ``seconds`` more CPU time."""
    goal = cpu(process) + seconds
    while cpu(process) < goal:
        time.sleep(0.01)


def test_a_spinning_process_is_counted_as_others_and_its_own_child_as_ours():
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    spinning = spinner.start()
    try:
        spin = psutil.Process(spinning.pid)
        me = psutil.Process()
        before_spin, before_me = cpu(spin), cpu(me)
        # the same window measured for two process trees: the sleeper's (the spinner is another
        # process) and this one's (the spinner is its child)
        with BusyMeter(psutil.Process(sleeper.pid)) as theirs, BusyMeter(me) as ours:
            spin_for(spin, 0.6)
        spun, mine = cpu(spin) - before_spin, cpu(me) - before_me
    finally:
        spinner.stop(spinning)
        sleeper.communicate(b"")
    assert theirs.window is not None and ours.window is not None
    # fires: everything the spinner used is someone else's to the sleeper
    assert theirs.window.others_cores * theirs.window.seconds >= spun - TICK
    assert theirs.window.contaminated(0.2)
    # but the spinner is this process's own child: not "others" for it, whatever else runs meanwhile
    assert ours.window.own_cores * ours.window.seconds >= spun - TICK
    moved = theirs.window.others_cores * theirs.window.seconds - ours.window.others_cores * ours.window.seconds
    assert abs(moved - (spun + mine)) <= 2 * TICK + 0.02 * spun


def lifetime_cpu(exclude: set[int]) -> dict[int, float]:
    """CPU seconds (own and reaped children's) of every process but ``exclude``."""
    found = {}
    for process in psutil.process_iter():
        try:
            if process.pid in exclude:
                continue
            times = process.cpu_times()
            found[process.pid] = times.user + times.system + times.children_user + times.children_system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_real_worker_does_not_count_its_own_threads_and_is_silent_when_nothing_else_ran(workspace):
    """A real arm's process with two threads: its window counts only what the other processes
    used meanwhile (bounded by their CPU time over the whole worker's life), and with nothing else
    busy that is below the threshold: no warning fired by our own work."""
    import json

    import yaml

    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    raw["train"]["threads"] = 2
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    output = workspace / "arm.json"
    me = psutil.Process()
    worker = subprocess.Popen([*COMMAND, "numpy", "stock", str(output)])
    tree = {me.pid, worker.pid}
    before = lifetime_cpu(tree)
    worker.wait()
    tree |= {child.pid for child in me.children(recursive=True)}
    after = lifetime_cpu(tree)
    assert worker.returncode == 0
    window = json.loads(output.read_text())["window"]
    explained = sum(max(after[pid] - before[pid], 0.0) for pid in before.keys() & after.keys())
    assert window["own_cores"] > 0.05  # its own work counted as its own (what it gets of a shared machine)
    # "others" over the window is at most what the other processes used over the worker's life
    assert window["others_cores"] * window["seconds"] <= explained + TICK + 0.05 * window["seconds"]
    if explained < 0.1 * window["seconds"]:  # an idle machine: the check stays silent
        assert window["others_cores"] <= load_params().timing.busy_cores
