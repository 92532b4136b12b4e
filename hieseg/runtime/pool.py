"""Tasks spread over devices: one spawned worker process per device, each taking the next task when free.

Two users: a study's training runs (:mod:`hieseg.studies`), tasks of minutes to hours where a
failure should stop the work promptly, and batch prediction's cases (:mod:`hieseg.inference.batch`),
tasks of seconds whose work function returns a case's failure as its result, so that only a
dead worker stops the run. One process per GPU is what a GPU server wants:

* each worker is a ``spawn``-ed process (CUDA cannot be forked) that gets its device once and
  calls ``work(device, task)`` for each task it takes from a shared queue;
* the usable cores are split between the workers (``os.sched_setaffinity``), so several CPU
  workers, or the data loaders of several GPU workers, do not fight over the same cores; torch's
  intra-op threads follow each worker's share;
* the first task that fails stops the others: the workers still running get SIGTERM, which
  they raise as :class:`~hieseg.errors.Terminated` so their clean-ups run (a study releases its
  claims and keeps its checkpoints, prediction removes a half-written mask), and the failure is raised in the caller: a
  :class:`~hieseg.errors.HiesegError` as itself, anything else with the worker's traceback;
* a worker that dies (killed, out of memory) is reported, as :class:`WorkerDied`, with the task it
  was running;
* Ctrl-C or SIGTERM of the caller stops the workers the same way.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import current_process, get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import TypeVar

import numpy as np
import torch

from hieseg.errors import HiesegError, Terminated
from hieseg.runtime.logs import configure_logging

LOG = logging.getLogger(__name__)
Task = TypeVar("Task")
Result = TypeVar("Result")
POLL_S = 2.0
"""How often the caller checks that its workers are alive while it waits for a result."""
STOP_GRACE_S = 60.0
"""How long stopped workers get for their clean-ups before they are killed."""
STARTED, DONE, FAILED, BUG, INTERRUPTED = "started", "done", "failed", "bug", "interrupted"


class WorkerDied(RuntimeError):
    """A worker process ended without reporting on its task (killed by a signal, out of memory)."""

    def __init__(self, message: str, task: object | None) -> None:
        super().__init__(message)
        self.task = task
        """The task the worker was running; ``None`` when it died between tasks."""


def run_on_devices(
    work: Callable[[str, Task], Result], tasks: Sequence[Task], devices: Sequence[str], verbose: bool = False
) -> Iterator[tuple[Task, Result]]:
    """Run ``work(device, task)`` for every task on one worker per entry of ``devices``; yield (task, result)
    as the tasks finish. ``work`` and the tasks must pickle (a module-level function, or a partial of one)."""
    context = get_context("spawn")
    todo: Queue = context.Queue()
    reports: Queue = context.Queue()
    for index, task in enumerate(tasks):
        todo.put((index, task))
    for _ in devices:
        todo.put(None)
    shares = core_shares(len(devices))
    workers = [
        context.Process(target=_worker, args=(work, device, share, todo, reports, verbose),
                        name=f"worker {number} on {device}")
        for number, (device, share) in enumerate(zip(devices, shares))
    ]
    for worker in workers:
        worker.start()
    running: dict[str, int] = {}
    remaining = len(tasks)
    finished = False
    try:
        while remaining:
            try:
                kind, name, index, payload = reports.get(timeout=POLL_S)
            except queue.Empty:
                _check_alive(workers, running, tasks)
                continue
            if kind == STARTED:
                running[name] = index
                continue
            running.pop(name, None)
            if kind == DONE:
                remaining -= 1
                yield tasks[index], payload
            elif kind == FAILED:
                raise payload
            elif kind == BUG:
                raise RuntimeError(f"{tasks[index]} failed in {name}:\n{payload}")
            else:
                raise Terminated(payload)
        finished = True
    finally:
        _stop(workers, reports, gently=finished)


def core_shares(workers: int) -> list[list[int] | None]:
    """Each worker's share of this process's usable cores, in contiguous blocks (``None``: one worker keeps all).

    With more workers than cores, the workers take turns on them.
    """
    if workers <= 1:
        return [None] * workers
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < workers:
        return [[cores[index % len(cores)]] for index in range(workers)]
    return [[int(core) for core in block] for block in np.array_split(cores, workers)]


def _worker(
    work: Callable[[str, object], object], device: str, cores: list[int] | None, todo: Queue, reports: Queue,
    verbose: bool,
) -> None:
    """A worker's life: take tasks until the end marker, report each; stop at the first failure or signal."""
    signal.signal(signal.SIGTERM, _interrupt_once)
    signal.signal(signal.SIGINT, _interrupt_once)
    configure_logging(verbose)
    name = current_process().name
    if cores is not None:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(len(cores))
    LOG.info("%s: pid %d, %s", name, os.getpid(), f"cores {cores}" if cores is not None else "every core")
    index = -1
    try:
        while (item := todo.get()) is not None:
            index, task = item
            reports.put((STARTED, name, index, None))
            try:
                result = work(device, task)
            except HiesegError as exc:
                reports.put((FAILED, name, index, exc))
                return
            except Exception:  # a bug: its traceback goes to the caller, which stops the others
                reports.put((BUG, name, index, traceback.format_exc()))
                return
            reports.put((DONE, name, index, result))
    except KeyboardInterrupt as exc:
        reports.put((INTERRUPTED, name, index, exc.signum if isinstance(exc, Terminated) else signal.SIGINT))


def _interrupt_once(signum: int, frame: object) -> None:
    """Raise the first SIGINT or SIGTERM as :class:`Terminated`; ignore the next ones, so clean-ups finish."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Terminated(signum)


def _check_alive(workers: Sequence[BaseProcess], running: dict[str, int], tasks: Sequence[object]) -> None:
    """Raise :class:`WorkerDied` for a worker that ended by a signal or an error exit, which reports nothing.

    A worker that ends normally has reported on every task it took, so waiting for its reports is safe.
    """
    for worker in workers:
        if worker.exitcode not in (None, 0):
            task = tasks[running[worker.name]] if worker.name in running else None
            how = f"signal {-worker.exitcode}" if worker.exitcode < 0 else f"exit status {worker.exitcode}"
            raise WorkerDied(f"{worker.name} (pid {worker.pid}) died with {how}"
                             + (f" while running {task}" if task is not None else ""), task)


def _stop(workers: Sequence[BaseProcess], reports: Queue, gently: bool) -> None:
    """End the workers: after their end marker when all went well, else by SIGTERM, then SIGKILL after a grace."""
    if not gently:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in workers:
        while worker.is_alive() and time.monotonic() < deadline:
            _drain(reports)  # a worker cannot exit while its reports wait in the pipe
            worker.join(timeout=0.2)
        if worker.is_alive():
            LOG.warning("%s did not stop within %.0f s; killing it", worker.name, STOP_GRACE_S)
            worker.kill()
            worker.join()


def _drain(reports: Queue) -> None:
    try:
        while True:
            reports.get_nowait()
    except queue.Empty:
        pass
