"""Threads, seeds and the machine facts every replicate records (stages/common/runtime.py)."""

from __future__ import annotations

import os
import platform

import pytest

from stages.common import runtime


def test_relative_spread_is_max_minus_min_over_the_median():
    assert runtime.relative_spread([2.0, 1.0, 3.0]) == 1.0
    assert runtime.relative_spread([4.0, 4.0]) == 0.0
    assert runtime.relative_spread([5.0]) is None


def test_load_per_core_is_the_one_minute_load_average_over_the_cores():
    before = os.getloadavg()[0] / os.cpu_count()
    measured = runtime.load_per_core()
    after = os.getloadavg()[0] / os.cpu_count()
    assert min(before, after) - 1e-3 <= measured <= max(before, after) + 1e-3


def test_the_machine_environment_names_the_cpu_cores_threads_and_python():
    environment = runtime.machine_environment(3)
    assert environment["threads"] == "3" and environment["cores"] == str(os.cpu_count())
    assert environment["python"] == platform.python_version()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), None)
        if model is None:
            pytest.skip("no model name in /proc/cpuinfo")
        assert environment["cpu"] == model


def test_the_machine_environment_names_the_kernel_instruction_sets_the_cpu_has():
    """``cpu_isa``: exactly the CPU's flags among those that pick kernels, so that two machines with
    the same model name but other instruction sets (AVX-512, AMX) are told apart."""
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo")
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), None)
    if flags is None:
        pytest.skip("no flags line in /proc/cpuinfo")
    recorded = runtime.machine_environment(1)["cpu_isa"].split()
    assert set(recorded) == set(flags) & set(runtime.KERNEL_ISA)
    assert "avx512f" in runtime.KERNEL_ISA and "amx_tile" in runtime.KERNEL_ISA


def test_op_determinism_is_the_gpus_alone():
    assert runtime.op_determinism("cuda") and not runtime.op_determinism("cpu")
    assert runtime.jax_device_before_start("cpu") == "cpu"
