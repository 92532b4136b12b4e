"""Worker processes per device: results, shares of the cores, and how a failure or a death stops the rest."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from hieseg.errors import DatasetError
from hieseg.runtime import pool as device_pool


def task(device: str, item: tuple[str, Path]) -> tuple[str, int, list[int]]:
    """What the tests' tasks do, chosen by the task: work, fail, crash, die, or wait to be stopped."""
    action, folder = item
    if action == "fail":
        raise DatasetError(f"{folder}: bad case")
    if action == "crash":
        raise ZeroDivisionError("a bug")
    if action == "die":
        time.sleep(1)  # let the worker's "started" report leave before it dies
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "wait":
        try:
            time.sleep(600)
        finally:
            (folder / f"cleaned-up-{os.getpid()}").touch()
    return device, os.getpid(), sorted(os.sched_getaffinity(0))


def test_core_shares_split_the_usable_cores() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert device_pool.core_shares(1) == [None]
    shares = device_pool.core_shares(2)
    if len(cores) >= 2:
        assert sorted(sum(shares, [])) == cores and not set(shares[0]) & set(shares[1])
    many = device_pool.core_shares(len(cores) + 1)
    assert all(len(share) == 1 for share in many) and {share[0] for share in many} == set(cores)


@pytest.mark.slow
def test_every_task_runs_once_on_a_worker_with_its_own_cores(tmp_path: Path) -> None:
    tasks = [("work", tmp_path)] * 6
    results = list(device_pool.run_on_devices(task, tasks, ["cpu", "cpu"]))
    assert len(results) == 6 and all(item == ("work", tmp_path) for item, _ in results)
    by_pid = {pid: tuple(cores) for _, (device, pid, cores) in results}
    assert all(device == "cpu" for _, (device, _, _) in results)
    assert 1 <= len(by_pid) <= 2 and os.getpid() not in by_pid
    shares = {tuple(share) for share in device_pool.core_shares(2)}
    assert set(by_pid.values()) <= shares and len(set(by_pid.values())) == len(by_pid)  # each its own share


@pytest.mark.slow
def test_a_failed_task_stops_the_others_after_their_clean_ups(tmp_path: Path) -> None:
    tasks = [("wait", tmp_path), ("fail", tmp_path), ("work", tmp_path)]
    with pytest.raises(DatasetError, match="bad case"):
        list(device_pool.run_on_devices(task, tasks, ["cpu", "cpu"]))
    assert len(list(tmp_path.glob("cleaned-up-*"))) == 1  # the waiting task got SIGTERM and ran its finally


@pytest.mark.slow
def test_a_bug_and_a_dead_worker_are_reported_with_their_task(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)\('crash'.*ZeroDivisionError: a bug"):
        list(device_pool.run_on_devices(task, [("crash", tmp_path)], ["cpu"]))
    with pytest.raises(device_pool.WorkerDied, match=r"died with signal 9 while running \('die'") as died:
        list(device_pool.run_on_devices(task, [("die", tmp_path), ("work", tmp_path)], ["cpu", "cpu"]))
    assert died.value.task == ("die", tmp_path)  # for the caller to report, as predict lists the case
