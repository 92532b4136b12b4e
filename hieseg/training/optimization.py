"""How the network is optimised: AdamW with warm-up and cosine decay, mixed precision on CUDA, clipped steps,
and the CPU threads a training process takes."""

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
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config))
    scaler = torch.amp.GradScaler("cuda", enabled=config.train.amp and device.type == "cuda")
    return Optimization(optimizer, scheduler, scaler)


def _warmup_cosine(config: ExperimentConfig):
    """Linear warm-up for ``warmup_epochs`` then cosine decay to zero at the last epoch."""
    warmup, total = config.train.warmup_epochs, config.train.epochs

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


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


def intra_op_threads(config: ExperimentConfig, processes: int = 1) -> int:
    """torch's intra-op threads for training: the setting, or this process's share of the usable cores
    (``processes`` training processes on this machine) left by its loader workers."""
    if config.train.torch_threads > 0:
        return config.train.torch_threads
    return max(1, len(os.sched_getaffinity(0)) // processes - config.train.num_workers)


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
