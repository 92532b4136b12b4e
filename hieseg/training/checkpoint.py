"""A run's ``last.ckpt``: everything a resumed run needs to continue exactly where the last epoch ended.

The random states are not saved: every epoch derives them from (seed, epoch) when it starts
(:func:`hieseg.training.data.seed_epoch`), so the epoch number restores them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hieseg.config.settings import ExperimentConfig
from hieseg.errors import ConfigError, ModelError
from hieseg.io.images import write_atomic
from hieseg.model.weights import DAMAGED_FILE_ERRORS

CHECKPOINT_FILE = "last.ckpt"
CHECKPOINT_KEYS = frozenset({"config", "model", "optimizer", "scheduler", "scaler", "state"})
"""What a checkpoint must hold; ``history`` (the log rows) is there since the logs follow the checkpoint."""


@dataclass
class TrainingState:
    """Progress that a checkpoint must restore for a resumed run to continue identically."""

    epoch: int = 0
    best_dice: float = -1.0
    best_epoch: int = -1
    stale_validations: int = 0
    loader_workers: int | None = None
    """The loader workers the run draws its patches with, which decide which patches it draws: a resumed run
    whose ``train.num_workers`` is auto takes these, whatever the cores of the machine it resumes on
    (None in checkpoints of earlier versions)."""


@dataclass
class Optimization:
    """What optimises the network: the optimiser, its learning-rate schedule and the mixed-precision scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


def save_atomic(payload: object, path: Path) -> None:
    """``torch.save`` through :func:`~hieseg.io.images.write_atomic`, into an open file: saved to a path, torch
    names the archive's folder after the (random) temporary file, so equal tensors would give other bytes."""

    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            torch.save(payload, handle)

    write_atomic(path, write)


def save_checkpoint(path: Path, config: ExperimentConfig, network: torch.nn.Module, optimization: Optimization,
                    state: TrainingState, history: list[dict[str, float]]) -> None:
    """Everything a resumed run needs, and the log rows up to ``state.epoch``; the random states follow from the
    seed and ``state.epoch``."""
    checkpoint = {
        "config": config.to_dict(),
        "model": network.state_dict(),
        "optimizer": optimization.optimizer.state_dict(),
        "scheduler": optimization.scheduler.state_dict(),
        "scaler": optimization.scaler.state_dict(),
        "state": vars(state),
        "history": [dict(row) for row in history],
    }
    save_atomic(checkpoint, path)


def read_checkpoint(path: Path) -> dict:
    """A run's last.ckpt, checked to hold every part a resumed run needs."""
    problem = (f"{path}: unreadable checkpoint ({path.stat().st_size} bytes, truncated, corrupt or not written "
               "by train.py); delete it to train from the start")
    try:  # the run's own file; checkpoints of earlier versions also hold numpy random states
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except DAMAGED_FILE_ERRORS as exc:
        raise ModelError(problem) from exc
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
        raise ModelError(problem)
    return checkpoint


def restore_checkpoint(checkpoint: dict, path: Path, config: ExperimentConfig, network: torch.nn.Module,
                       optimization: Optimization) -> TrainingState:
    """Put a checkpoint read by :func:`read_checkpoint` back into the run's objects; returns its progress."""
    if _weights_settings(ExperimentConfig.from_dict(checkpoint["config"])) != _weights_settings(config):
        raise ConfigError(f"{path} was written with a different configuration; cannot resume it with this one")
    network.load_state_dict(checkpoint["model"])
    optimization.optimizer.load_state_dict(checkpoint["optimizer"])
    optimization.scheduler.load_state_dict(checkpoint["scheduler"])
    optimization.scaler.load_state_dict(checkpoint["scaler"])
    return TrainingState(**checkpoint["state"])


def _weights_settings(config: ExperimentConfig) -> dict:
    """The settings that shape the weights: all but the tuning section, which only acts after training."""
    data = config.to_dict()
    data.pop("tuning")
    return data
