"""The standard spinning process: one Python process busy-looping on one core, for as long as it
lives. The contention finding times each framework's steady step while one runs; the busy check's
tests start one to see the check fire."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

SPIN = "while True: pass"


def start(timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start a spinner and return once it has been seen using CPU (not after a fixed sleep)."""
    process = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL)
    watched = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = watched.cpu_times()
        if times.user + times.system > 0.05 and process.poll() is None:
            return process
        time.sleep(0.01)  # polling for a condition, not waiting a fixed time
    stop(process)
    raise RuntimeError(f"the spinning process {process.pid} used no CPU within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()
