"""Which device a command runs on: the ``--device`` / ``--devices`` values every command accepts, checked once.

Only the devices the project supports are accepted (``DEVICE_CHOICES``); anything else, or a GPU
that is not there, is a :class:`~hieseg.errors.ConfigError` before any work.
"""

from __future__ import annotations

import logging
import re

import torch

from hieseg.errors import ConfigError

LOG = logging.getLogger(__name__)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else CPU (``auto`` without CUDA: see :func:`announce_device`).

    Only the devices the project supports are accepted (``DEVICE_CHOICES``); anything else,
    or a GPU that is not there, is a :class:`ConfigError`.
    """
    if not DEVICE_PATTERN.fullmatch(requested):
        raise ConfigError(f"--device {requested}: not a supported device; use {DEVICE_CHOICES}")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not available:
            raise ConfigError(f"--device {requested}: CUDA is not available on this machine")
        if (device.index or 0) >= available:
            raise ConfigError(f"--device {requested}: this machine has {available} CUDA device(s), cuda:0 to "
                              f"cuda:{available - 1}")
    return device


def announce_device(requested: str, device: torch.device | str) -> None:
    """Say once, at INFO, that ``auto`` found no CUDA device, when a command's work starts (after its checks)."""
    if requested == "auto" and torch.device(device).type == "cpu":
        LOG.info("no CUDA device: running on the CPU (slower)")


def worker_devices(device: str, devices: str | None, workers: int) -> list[str]:
    """One entry per worker process: ``workers`` per device of ``--devices`` (or of ``--device``), checked."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    names = [name.strip() for name in devices.split(",")] if devices else [device]
    resolved = [str(select_device(name)) for name in names]
    return [name for name in resolved for _ in range(workers)]
