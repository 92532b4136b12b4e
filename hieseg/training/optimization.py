"""How the network is optimised: AdamW with warm-up and cosine decay, mixed precision on CUDA, clipped steps,
and the CPU a training process takes: its loader workers and its intra-op threads, from the cores it may use."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hieseg.config.settings import ExperimentConfig
from hieseg.data.transforms import IMAGE, LABEL
from hieseg.training.checkpoint import Optimization

LOG = logging.getLogger(__name__)


def build_optimization(config: ExperimentConfig, network: torch.nn.Module, device: torch.device) -> Optimization:
    """AdamW, the warm-up + cosine schedule and the mixed-precision gradient scaler (active on CUDA with ``train.amp``)."""
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(config.train.warmup_epochs, config.train.epochs))
    scaler = torch.amp.GradScaler("cuda", enabled=config.train.amp and device.type == "cuda")
    return Optimization(optimizer, scheduler, scaler)


class WarmupCosine:
    """The learning-rate factor of an epoch: linear warm-up for ``warmup`` epochs, then cosine decay to zero at
    epoch ``total``, which a time budget may move while the run goes (``train.budget_min``)."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = warmup
        self.total = total

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / (self.warmup + 1)
        progress = (epoch - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def network_budget_min(config: ExperimentConfig) -> float:
    """One network's minutes of epochs: ``train.budget_min`` shared equally by a fold's ``train.networks_per_fold``."""
    return config.train.budget_min / config.train.networks_per_fold


def planned_epochs(config: ExperimentConfig, done: int, seconds: list[float]) -> int:
    """The epochs a run plans after ``done`` of them took ``seconds`` each: ``train.epochs`` without a budget;
    with ``train.budget_min``, those done plus the remaining budget (:func:`network_budget_min`) over the mean
    epoch, rounded, between ``done`` (the budget is spent) and ``train.epochs``."""
    if not config.train.budget_min or not seconds:
        return config.train.epochs
    remaining = network_budget_min(config) * 60.0 - sum(seconds)
    more = max(0, round(remaining / (sum(seconds) / len(seconds))))
    return max(done, min(config.train.epochs, done + more))


def optimisation_step(
    config: ExperimentConfig,
    network: torch.nn.Module,
    loss_function: torch.nn.Module,
    optimization: Optimization,
    batch: dict,
    device: torch.device,
) -> float:
    """One optimisation step (mixed precision when the scaler is enabled, clipped gradients); returns the loss.

    ``loss_function`` is :func:`~hieseg.model.losses.build_training_loss`'s, which scores the network's
    logits (a list of them under deep supervision) in float32.
    """
    optimizer, scaler = optimization.optimizer, optimization.scaler
    images = batch[IMAGE].as_tensor().to(device, non_blocking=True)
    labels = batch[LABEL].as_tensor().to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        logits = network(images)
    loss = loss_function(logits, labels)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(network.parameters(), config.train.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


AUTO_WORKERS_MAX = 12
"""Most loader workers ``train.num_workers: null`` starts (nnU-Net's default number of augmentation processes):
each one holds its own copies of the patches it draws, and a pass over the data restarts them all."""
CUDA_MAIN_PROCESS_CORES = 2
"""Cores a CUDA training process keeps for itself besides its workers: it launches the kernels, and MONAI computes
the distance transforms of the Hausdorff losses on the CPU (without cuCIM)."""
CPU_CORES_PER_WORKER = 8
"""On the CPU the network takes the cores: one worker per this many keeps up with its steps (the training
pipeline benchmark, ``python -m hieseg.bench --training``, measures it)."""


def usable_cores(processes: int = 1) -> int:
    """This process's share of the cores it may run on, ``processes`` training processes sharing them (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) // processes)


def auto_loader_workers(cores: int, device_type: str, batches_per_pass: int | None = None) -> int:
    """The loader workers ``train.num_workers: null`` means on ``cores`` usable cores for a ``device_type`` run.

    * one core: none (the main process draws its patches itself; a worker would only take turns with it);
    * CUDA: the cores but ``CUDA_MAIN_PROCESS_CORES`` (at least 1, at most ``AUTO_WORKERS_MAX``): the GPU
      computes the steps, so the workers are all that keeps it fed (2 cores: 1, 8: 6, 16 and more: 12);
    * CPU: one per ``CPU_CORES_PER_WORKER`` cores (at least 1), the rest computing the steps (2 to 15 cores: 1,
      16: 2, 32: 4);
    * never more than ``batches_per_pass``, the batches of one pass of the loader (:func:`batches_per_pass`):
      each pass starts its workers afresh, and those beyond its batches would start with nothing to draw.
    """
    if cores < 2:
        return 0
    if device_type == "cuda":
        workers = min(AUTO_WORKERS_MAX, max(1, cores - CUDA_MAIN_PROCESS_CORES))
    else:
        workers = max(1, cores // CPU_CORES_PER_WORKER)
    return workers if batches_per_pass is None else max(1, min(workers, batches_per_pass))


def shuffles_per_pass(config: ExperimentConfig, cases: int, launched: bool = False) -> int:
    """Shuffles of ``cases`` cases one pass of the loader draws, a pass starting its workers afresh.

    A single process draws as many as an epoch's steps take (``train.steps_per_epoch``), so its workers start
    once an epoch rather than once a shuffle: each start left the steps waiting 0.5 s on 2 CPU cores, 8 % of
    the recipe's loop (``python -m hieseg.bench --training``). Without ``train.steps_per_epoch`` an epoch is one
    shuffle; under torchrun (``launched``) the :class:`~torch.utils.data.distributed.DistributedSampler` deals
    each rank its slice of one shuffle a pass.
    """
    steps = config.train.steps_per_epoch
    if launched or not steps:
        return 1
    return max(1, math.ceil(steps * config.train.batch_size / cases))


def batches_per_pass(config: ExperimentConfig, cases: int, processes: int = 1, launched: bool = False) -> int:
    """Batches one process draws in a pass of the loader over ``cases`` cases shared by ``processes`` (torchrun)
    processes (:func:`shuffles_per_pass`)."""
    per_shuffle = math.ceil(cases / processes)
    return max(1, math.ceil(shuffles_per_pass(config, cases, launched) * per_shuffle / config.train.batch_size))


def loader_workers(config: ExperimentConfig, device: torch.device, processes: int = 1,
                   batches: int | None = None) -> int:
    """The loader workers of a run: ``train.num_workers``, or :func:`auto_loader_workers` of this process's share of
    the cores (``processes`` training processes on the machine) and its ``batches`` per pass."""
    if config.train.num_workers is not None:
        return config.train.num_workers
    return auto_loader_workers(usable_cores(processes), device.type, batches)


def describe_workers(config: ExperimentConfig, workers: int, device: torch.device, processes: int = 1,
                     resumed: bool = False) -> str:
    """How many loader workers a run starts and why, for its log (``resumed``: the number a checkpoint recorded)."""
    noun = "loader worker" if workers == 1 else "loader workers"
    if config.train.num_workers is not None:
        return f"{workers} {noun} (train.num_workers)"
    if resumed:
        return f"{workers} {noun} (train.num_workers auto: as the run being resumed drew its patches)"
    cores = usable_cores(processes)
    capped = f", no more than the {workers} batches of a pass" if workers < auto_loader_workers(
        cores, device.type) else ""
    return f"{workers} {noun} (train.num_workers auto: {cores} usable cores, {device.type}{capped})"


def intra_op_threads(config: ExperimentConfig, processes: int = 1, workers: int | None = None) -> int:
    """torch's intra-op threads for training: the setting, or this process's share of the usable cores
    (``processes`` training processes on this machine) left by its ``workers`` loader workers (default:
    ``train.num_workers``, resolved for the CPU when it is auto)."""
    if config.train.torch_threads > 0:
        return config.train.torch_threads
    if workers is None:
        workers = loader_workers(config, torch.device("cpu"), processes)
    return max(1, usable_cores(processes) - workers)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads, restoring the caller's count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    LOG.info("torch intra-op threads: %d", count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
