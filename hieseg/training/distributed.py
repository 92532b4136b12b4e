"""Training on several processes launched by ``torchrun``: who this process is, its device, and rank 0's decisions.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and tells each
its place in the environment: ``RANK`` (0 to ``WORLD_SIZE`` - 1 over all machines),
``LOCAL_RANK`` (its index on this machine, hence its GPU) and ``LOCAL_WORLD_SIZE``. Without
those variables a command runs as a single process, exactly as before.

Rank 0 is the only process that touches the output folder or decides anything: it checks the
folder, reads a checkpoint to resume, writes every file, validates and decides when to stop.
:func:`on_main` hands its result, or its :class:`~hieseg.errors.HiesegError`, to every rank, so
the others act on the same value or fail with the same error instead of waiting forever in the
next collective call. Only rank 0 reads or writes the output folder (with several machines,
put it on a shared file system: rendezvous may place rank 0 on any of them); every rank reads
the data folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hieseg.errors import ConfigError, HiesegError
from hieseg.runtime.devices import DEVICE_CHOICES, DEVICE_PATTERN, select_device

T = TypeVar("T")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
"""Set by torchrun (and by schedulers' launchers that imitate it) for every process it starts."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    """Processes on this machine, which share its CPU cores."""
    launched: bool = False
    """Started by torchrun, so training runs under :class:`DistributedDataParallel`."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the outputs and decides."""
        return self.rank == 0


def torchrun_ranks(environ: Mapping[str, str] = os.environ) -> Ranks:
    """The ranks torchrun gave this process, or a single process when it was not started by torchrun.

    Some but not all of torchrun's variables, or values that contradict each other, are a
    :class:`ConfigError`: training would otherwise write the same files from several processes.
    """
    present = [name for name in TORCHRUN_VARIABLES if name in environ]
    if not present:
        return Ranks()
    if len(present) < len(TORCHRUN_VARIABLES):
        missing = ", ".join(name for name in TORCHRUN_VARIABLES if name not in environ)
        raise ConfigError(f"{', '.join(present)} set but not {missing}: start distributed training with torchrun")
    try:
        values = {name: int(environ[name]) for name in (*TORCHRUN_VARIABLES, "LOCAL_WORLD_SIZE") if name in environ}
    except ValueError:
        shown = ", ".join(f"{name}={environ[name]!r}" for name in TORCHRUN_VARIABLES)
        raise ConfigError(f"torchrun's variables must be integers, got {shown}") from None
    ranks = Ranks(
        rank=values["RANK"],
        world_size=values["WORLD_SIZE"],
        local_rank=values["LOCAL_RANK"],
        local_world_size=values.get("LOCAL_WORLD_SIZE", 1),
        launched=True,
    )
    if not (0 <= ranks.rank < ranks.world_size and ranks.local_rank >= 0 and ranks.local_world_size >= 1):
        raise ConfigError(f"inconsistent torchrun ranks: RANK {ranks.rank}, WORLD_SIZE {ranks.world_size}, "
                          f"LOCAL_RANK {ranks.local_rank}, LOCAL_WORLD_SIZE {ranks.local_world_size}")
    return ranks


def current() -> Ranks:
    """The ranks of the running process group (see :func:`process_group`), else a single process.

    A process that torchrun started but that has no process group would train alone and write the
    same files as its siblings, so that is refused.
    """
    ranks = torchrun_ranks()
    if not ranks.launched:
        return ranks
    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("started by torchrun but no process group is running: launch train.py, which starts it")
    return ranks


def rank_device(requested: str, ranks: Ranks) -> torch.device:
    """The device of this rank: the request as such for a single process; under torchrun, GPU ``LOCAL_RANK``.

    Under torchrun ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (``auto`` falls back to the
    CPU without CUDA), ``cpu`` means the CPU for every rank, and ``cuda:N`` is accepted only as
    this rank's own GPU: torchrun gives the GPUs out, ``CUDA_VISIBLE_DEVICES`` chooses them.
    """
    if not ranks.launched:
        return select_device(requested)
    if not DEVICE_PATTERN.fullmatch(requested):
        raise ConfigError(f"--device {requested}: not a supported device; use {DEVICE_CHOICES}")
    own = torch.device("cuda", ranks.local_rank)
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return select_device("cpu")
    device = torch.device(requested) if requested != "auto" else own
    if device.type == "cuda" and device.index not in (None, ranks.local_rank):
        raise ConfigError(f"--device {requested}: under torchrun every process uses its own GPU, here cuda:"
                          f"{ranks.local_rank}; pass --device cuda and choose the GPUs with CUDA_VISIBLE_DEVICES")
    return select_device(str(own))


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """While the block runs, this process belongs to torchrun's process group (no-op for a single process).

    NCCL connects the GPUs; gloo, which runs everywhere, the CPU processes. torchrun's
    ``MASTER_ADDR`` and ``MASTER_PORT`` say where the ranks meet.
    """
    if not ranks.launched:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=ranks.rank, world_size=ranks.world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def on_main(action: Callable[[], T], ranks: Ranks) -> T:
    """Run ``action`` on rank 0 only and return its result on every rank (pickled and broadcast).

    A :class:`HiesegError` raised by ``action`` is raised on every rank, so all of them stop
    together with the same message. Any other exception is a bug: it ends rank 0 and torchrun
    then stops the others.
    """
    if not ranks.launched:
        return action()
    outcome: list[object] = [None]
    if ranks.is_main:
        try:
            outcome[0] = (True, action())
        except HiesegError as error:
            outcome[0] = (False, error)
    dist.broadcast_object_list(outcome, src=0)
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value


def mean_over_ranks(value: float, ranks: Ranks, device: torch.device) -> float:
    """The mean of a number over all ranks (the number itself for a single process)."""
    if not ranks.launched:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item()) / ranks.world_size


def data_parallel(network: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """The network wrapped in :class:`DistributedDataParallel` under torchrun, else the network itself.

    The wrapper copies rank 0's weights to every rank when it is built and averages the gradients
    over the ranks in each backward pass, so the ranks take identical steps. Checkpoints keep
    saving the inner network, whose state dict has the single-process keys.
    """
    if not ranks.launched:
        return network
    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
