"""Helpers of the DAG-time checks (peftbench.core.task_checks): how many processes check, and
the garbage collector's pause around the imports."""

from __future__ import annotations

import gc
import os

import pytest

from peftbench.core import task_checks


def usable() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.parametrize("cores", [None, 1, 2, 10**6])
def test_check_workers_follow_the_cores_given_within_the_cpus_usable(cores):
    workers = task_checks.check_workers(cores)
    assert 1 <= workers <= usable()
    assert workers == (min(cores, usable()) if cores else usable())


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_restores_the_collector_as_it_was(enabled):
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(RuntimeError), task_checks.gc_paused():
            assert not gc.isenabled()
            raise RuntimeError
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
