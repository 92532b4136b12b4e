"""A run's ``last.ckpt``: everything a resumed run needs to continue exactly where the last epoch ended.

The random states are not saved: every epoch derives them from (seed, epoch) when it starts
(:func:`hieseg.training.data.seed_epoch`), so the epoch number restores them all.

A checkpoint is read without running any code from it (tensors and plain containers only) and
checked field by field before anything of it is used, so a damaged, foreign or newer file is one
:class:`~hieseg.errors.ModelError` naming it and the field. Weights and checkpoints are saved only
when every tensor is finite, so a diverged run never replaces good files with NaN.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hieseg.config.settings import ExperimentConfig
from hieseg.errors import ConfigError, ModelError, OutputError, TrainingError
from hieseg.io.images import write_atomic
from hieseg.model.weights import (
    DAMAGED_FILE_ERRORS,
    first_non_finite,
    load_tensors,
    state_mismatch,
    unsafe_request,
)

CHECKPOINT_FILE = "last.ckpt"
CHECKPOINT_KEYS = frozenset({"config", "model", "optimizer", "scheduler", "scaler", "state"})
"""What a checkpoint must hold."""
OPTIONAL_KEYS = frozenset({"history", "rng"})
"""What it may hold besides: ``history`` (the log rows), there since the logs follow the checkpoint, and ``rng``
(numpy, torch and Python random states), which checkpoints of versions before 2026-11-26 held and which is unused."""
NUMPY_ARRAY_GLOBALS = (np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32)))
"""What unpickling the numpy random state of such an old checkpoint needs (an array of unsigned 32-bit integers):
the only globals a checkpoint may name besides tensors."""
DAMAGED_FIELD_ERRORS = (KeyError, TypeError, ValueError, IndexError, RuntimeError)
"""What torch's ``load_state_dict`` of an optimiser, schedule or scaler raises for contents that do not fit it."""
WHOLE_NUMBER_FIELDS = {"epoch": 0, "best_epoch": -1, "stale_validations": 0, "loader_workers": 0, "planned_epochs": 1}
"""The whole-number fields of a checkpoint's ``state`` and the least value each may take."""
SCHEDULER_FIELDS = frozenset({"base_lrs", "last_epoch", "lr_lambdas"})
"""What the learning-rate schedule's state must hold (torch versions add fields of their own besides)."""
SCHEDULER_REFERENCES = frozenset({"optimizer"})
"""What the schedule's state must not hold: its ``load_state_dict`` would replace the schedule's own optimiser."""
TORCH_WRITER_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")
"""The source location torch puts before the reason its zip writer failed."""


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
    planned_epochs: int | None = None
    """The epochs the run plans to train (``train.budget_min`` refits them after each epoch; None: ``train.epochs``,
    as in checkpoints of earlier versions)."""


@dataclass
class Optimization:
    """What optimises the network: the optimiser, its learning-rate schedule and the mixed-precision scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


def save_atomic(payload: object, path: Path) -> None:
    """``torch.save`` through :func:`~hieseg.io.images.write_atomic`, into an open file: saved to a path, torch
    names the archive's folder after the (random) temporary file, so equal tensors would give other bytes.

    torch's zip writer reports a failed write (a full disk) as a ``RuntimeError``: it becomes an
    :class:`OutputError` naming ``path``, and the temporary file is removed.
    """

    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            try:
                torch.save(payload, handle)
            except RuntimeError as exc:
                raise OutputError(f"{path}: cannot be written ({_write_failure(exc)})") from exc

    write_atomic(path, write)


def _write_failure(error: RuntimeError) -> str:
    """Why torch's zip writer failed: the system's reason under it (``No space left on device``), else torch's
    own words without its source location."""
    cause = error.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    lines = str(error).strip().splitlines()
    reason = TORCH_WRITER_PREFIX.sub("", lines[-1]) if lines else ""
    return f"{reason or 'torch could not write the file'}; is the disk full?"


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """A network's state dict as best weights, refused (nothing written) when a tensor is not finite."""
    _require_finite(path, state.items())
    save_atomic(state, path)


def save_checkpoint(path: Path, config: ExperimentConfig, network: torch.nn.Module, optimization: Optimization,
                    state: TrainingState, history: list[dict[str, float]]) -> None:
    """Everything a resumed run needs, and the log rows up to ``state.epoch``; the random states follow from the
    seed and ``state.epoch``. Refused (the last checkpoint kept) when the weights or the optimiser's state are
    not finite."""
    checkpoint = {
        "config": config.to_dict(),
        "model": network.state_dict(),
        "optimizer": optimization.optimizer.state_dict(),
        "scheduler": optimization.scheduler.state_dict(),
        "scaler": optimization.scaler.state_dict(),
        "state": vars(state),
        "history": [dict(row) for row in history],
    }
    _require_finite(path, [("model", checkpoint["model"]), ("optimizer", checkpoint["optimizer"]["state"])])
    save_atomic(checkpoint, path)


def _require_finite(path: Path, tensors: Iterable[tuple[str, object]]) -> None:
    """Refuse to save ``path`` when one of the named ``tensors`` holds a NaN or an infinity."""
    bad = first_non_finite(tensors)
    if bad is not None:
        raise TrainingError(f"{path}: not saved: tensor {bad} holds NaN or infinite values (training diverged); "
                            "lower train.learning_rate and train again into a new --out")


def read_checkpoint(path: Path) -> dict:
    """A run's last.ckpt, checked to hold every part a resumed run needs, each of the right kind."""
    try:
        checkpoint = load_tensors(path, NUMPY_ARRAY_GLOBALS)
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except DAMAGED_FILE_ERRORS as exc:
        raise ModelError(f"{path}: unreadable checkpoint ({path.stat().st_size} bytes, truncated, corrupt or not "
                         f"written by train.py{unsafe_request(exc)}); delete it to train from the start") from exc
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
        raise ModelError(f"{path}: unreadable checkpoint ({path.stat().st_size} bytes, truncated, corrupt or not "
                         "written by train.py); delete it to train from the start")
    unknown = sorted(str(key) for key in checkpoint.keys() - CHECKPOINT_KEYS - OPTIONAL_KEYS)
    if unknown:
        raise _damaged(path, "the checkpoint", f"unknown field(s) {', '.join(unknown)} (written by a newer version?)")
    _check_config(path, checkpoint["config"])
    _check_model(path, checkpoint["model"])
    _check_optimizer(path, checkpoint["optimizer"])
    for name in ("scheduler", "scaler"):
        if not isinstance(checkpoint[name], dict):
            raise _damaged(path, name, f"expected a state dict, got {type(checkpoint[name]).__name__}")
    _check_state(path, checkpoint["state"])
    _check_history(path, checkpoint.get("history", []))
    return checkpoint


def _damaged(path: Path, field: str, problem: str) -> ModelError:
    """The error for a checkpoint whose ``field`` is not what train.py writes."""
    return ModelError(f"{path}: damaged or unsupported checkpoint: {field}: {problem}; delete it to train from "
                      "the start")


def _check_config(path: Path, config: object) -> None:
    """The checkpoint's configuration must be one this version reads."""
    if not isinstance(config, dict):
        raise _damaged(path, "config", f"expected an object of sections, got {type(config).__name__}")
    try:
        ExperimentConfig.from_dict(config)
    except ConfigError as exc:
        raise _damaged(path, "config", f"invalid configuration: {exc}") from exc


def _check_model(path: Path, model: object) -> None:
    """The network's state dict: named, finite tensors (whether they fit the network is checked on restore)."""
    if not isinstance(model, dict) or not model:
        raise _damaged(path, "model", "expected the network's state dict, a non-empty mapping of names to tensors")
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in model.items()):
        raise _damaged(path, "model", "expected the network's state dict, a mapping of names to tensors")
    bad = first_non_finite(model.items())
    if bad is not None:
        raise _damaged(path, "model", f"tensor {bad} holds NaN or infinite values")


def _check_optimizer(path: Path, optimizer: object) -> None:
    """The optimiser's state dict: a ``state`` mapping and a list of ``param_groups``, each listing its params."""
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict):
        raise _damaged(path, "optimizer", "expected an optimiser state dict with a 'state' mapping")
    groups = optimizer.get("param_groups")
    if not isinstance(groups, list) or not groups:
        raise _damaged(path, "optimizer.param_groups", "expected a non-empty list of parameter groups")
    if not all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups):
        raise _damaged(path, "optimizer.param_groups", "expected each group to be a mapping with a 'params' list")


def _check_state(path: Path, state: object) -> None:
    """The run's progress: :class:`TrainingState`'s fields (``epoch`` required), whole numbers and a finite Dice."""
    if not isinstance(state, dict):
        raise _damaged(path, "state", f"expected a mapping of progress fields, got {type(state).__name__}")
    known = {item.name for item in dataclasses.fields(TrainingState)}
    unknown = sorted(str(key) for key in state.keys() - known)
    if unknown:
        raise _damaged(path, "state", f"unknown field(s) {', '.join(unknown)} (written by a newer version?)")
    if "epoch" not in state:
        raise _damaged(path, "state.epoch", "missing")
    for name, lowest in WHOLE_NUMBER_FIELDS.items():
        value = state.get(name)
        if value is None and name != "epoch":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise _damaged(path, f"state.{name}", f"expected a whole number >= {lowest}, got {value!r}")
    dice = state.get("best_dice", -1.0)
    if isinstance(dice, bool) or not isinstance(dice, (int, float)) or not math.isfinite(dice):
        raise _damaged(path, "state.best_dice", f"expected a finite number, got {dice!r}")


def _check_history(path: Path, history: object) -> None:
    """The log rows: a list of mappings of column names to numbers (NaN where nothing was measured)."""
    if not isinstance(history, list):
        raise _damaged(path, "history", f"expected a list of log rows, got {type(history).__name__}")
    for number, row in enumerate(history, 1):
        if not isinstance(row, dict) or not all(
                isinstance(key, str) and isinstance(value, (int, float)) and not isinstance(value, bool)
                for key, value in row.items()):
            raise _damaged(path, f"history row {number}", "expected a mapping of column names to numbers")


def restore_checkpoint(checkpoint: dict, path: Path, config: ExperimentConfig, network: torch.nn.Module,
                       optimization: Optimization) -> TrainingState:
    """Put a checkpoint read by :func:`read_checkpoint` back into the run's objects; returns its progress."""
    if _weights_settings(ExperimentConfig.from_dict(checkpoint["config"])) != _weights_settings(config):
        raise ConfigError(f"{path} was written with a different configuration; cannot resume it with this one")
    problem = state_mismatch(network.state_dict(), checkpoint["model"])
    if problem:
        raise _damaged(path, "model", f"does not fit the network of its configuration: {problem}")
    network.load_state_dict(checkpoint["model"])
    _load_field(path, "optimizer", optimization.optimizer, checkpoint["optimizer"])
    _check_optimizer_shapes(path, optimization.optimizer)
    _check_scheduler(path, checkpoint["scheduler"], len(optimization.optimizer.param_groups))
    _load_field(path, "scheduler", optimization.scheduler, checkpoint["scheduler"])
    _load_field(path, "scaler", optimization.scaler, checkpoint["scaler"])
    return TrainingState(**checkpoint["state"])


def _check_scheduler(path: Path, scheduler: dict, groups: int) -> None:
    """The schedule's state: its fields, one base learning rate per parameter group, and nothing it refers to."""
    missing = sorted(SCHEDULER_FIELDS - scheduler.keys())
    if missing:
        raise _damaged(path, "scheduler", f"missing field(s) {', '.join(missing)}")
    if scheduler.keys() & SCHEDULER_REFERENCES:
        raise _damaged(path, "scheduler", "holds an optimizer, which a schedule's state never does")
    base = scheduler["base_lrs"]
    if not isinstance(base, list) or len(base) != groups or not all(
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) for rate in base):
        raise _damaged(path, "scheduler.base_lrs", f"expected {groups} finite learning rate(s), got {base!r}")
    if isinstance(scheduler["last_epoch"], bool) or not isinstance(scheduler["last_epoch"], int):
        raise _damaged(path, "scheduler.last_epoch", f"expected a whole number, got {scheduler['last_epoch']!r}")


def _load_field(path: Path, field: str, target: object, state: dict) -> None:
    """``target.load_state_dict(state)``; what it raises for contents that do not fit is the field's damage."""
    try:
        target.load_state_dict(state)
    except DAMAGED_FIELD_ERRORS as exc:
        raise _damaged(path, field, f"does not fit this run's {field} ({type(exc).__name__}: {exc})") from exc


def _check_optimizer_shapes(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """Each parameter's restored optimiser state (AdamW's moments) must have the parameter's shape."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if not isinstance(value, torch.Tensor) or (value.dim() and value.shape != parameter.shape):
                    raise _damaged(path, "optimizer.state", f"{name} does not fit its parameter of shape "
                                                            f"{tuple(parameter.shape)}")


def _weights_settings(config: ExperimentConfig) -> dict:
    """The settings that shape the weights: all but the tuning section, which only acts after training."""
    data = config.to_dict()
    data.pop("tuning")
    return data
