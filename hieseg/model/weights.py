"""A weights folder: its config.json and its ``*.pt`` state dicts (one per network of each fold), loaded and checked.

The folder's one config.json builds every network, so an ensemble cannot mix networks or
settings; a file that is not such weights is a :class:`~hieseg.errors.ModelError` naming it.
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.errors import ConfigError, ModelError
from hieseg.model.network import build_network, network_of_state
from hieseg.model.provenance import warn_on_version_drift
from hieseg.model.refinement import Refiner, load_refiner, require_refiner

WEIGHTS_PATTERN = "*.pt"
DAMAGED_FILE_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, IndexError, KeyError, UnicodeDecodeError,
                       struct.error)
"""What ``torch.load`` raises for an empty, truncated, corrupt or foreign file (not a zip archive of tensors: its
weights-only unpickler then meets an empty stack, an unknown memo key, undecodable text or too few bytes), and
for a file whose pickle asks for anything but tensors and plain containers (which is never run)."""
UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
"""How torch's weights-only unpickler names the function or class a refused pickle asks for."""


@dataclass
class ModelBundle:
    """The networks of a weights folder (one per fold), the configuration they were trained with and the
    optional refinement stage tuning fitted for them."""

    config: ExperimentConfig
    networks: list[torch.nn.Module]
    weight_files: list[Path]
    refiner: Refiner | None = None


def load_bundle(model_dir: Path, device: torch.device) -> ModelBundle:
    """Read ``config.json`` and every ``*.pt`` state dict of a weights folder (warning when other versions made them).

    The folder's one config.json builds every network, so an ensemble cannot mix networks: a
    ``*.pt`` saved from another network than the one config.json names is refused, naming both.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / CONFIG_FILENAME
    if not config_path.is_file():
        raise ModelError(f"{config_path}: missing; a weights folder needs the config.json written by train.py")
    try:
        config = ExperimentConfig.load(config_path)
    except ConfigError as exc:
        raise ModelError(str(exc)) from exc
    warn_on_version_drift(config.provenance, config_path)
    weight_files = sorted(model_dir.glob(WEIGHTS_PATTERN))
    if not weight_files:
        raise ModelError(f"{model_dir}: no weight files ({WEIGHTS_PATTERN}) found")
    networks = [load_network(config, path, device) for path in weight_files]
    refiner = load_refiner(model_dir)
    if config.inference.refine:
        require_refiner(refiner, model_dir)
    return ModelBundle(config=config, networks=networks, weight_files=weight_files, refiner=refiner)


def load_network(config: ExperimentConfig, path: Path, device: torch.device) -> torch.nn.Module:
    """The network of ``config`` with the weights of ``path``; a file that is not such weights is a :class:`ModelError`."""
    network = build_network(config)
    try:
        state = load_tensors(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except DAMAGED_FILE_ERRORS as exc:
        raise ModelError(f"{path}: unreadable weights file ({path.stat().st_size} bytes): not a state dict "
                         f"saved by train.py, or truncated or corrupt{unsafe_request(exc)}") from exc
    problem = state_mismatch(network.state_dict(), state)
    other = network_of_state(state) if problem and isinstance(state, dict) else None
    if other is not None and other != config.network.name:
        raise ModelError(f"{path}: weights of network {other}, but {CONFIG_FILENAME} names network "
                         f"{config.network.name}; the weights of one folder are ensembled, so they must all be of "
                         f"its {CONFIG_FILENAME}'s network")
    if problem:
        raise ModelError(f"{path}: incompatible with the network of {CONFIG_FILENAME}: {problem}")
    bad = first_non_finite(state.items())
    if bad is not None:
        raise ModelError(f"{path}: tensor {bad} holds NaN or infinite values, so every prediction would be empty "
                         "or meaningless; the run that saved it diverged: train again with a lower "
                         "train.learning_rate")
    network.load_state_dict(state)
    return network.to(device).eval()


def load_tensors(path: Path, allowed: Iterable[object] = ()) -> object:
    """``torch.load`` of a file that must hold only tensors, plain containers and the ``allowed`` globals.

    Never ``weights_only=False``: a file in a weights folder or a run folder may come from anyone,
    and unpickling it must not run its code. torch's warnings about the pickle (its protocol, for
    a foreign file) are silenced, since a refusal is one line and the file is refused anyway.
    """
    with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed)):
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def unsafe_request(error: BaseException) -> str:
    """`` (its pickle asks for posix.system, which is never run)`` when :func:`load_tensors` refused a file for
    the code its pickle names, else ''."""
    match = UNSAFE_GLOBAL.search(str(error))
    return f" (its pickle asks for {match[1]}, which is never run)" if match else ""


def first_non_finite(tensors: Iterable[tuple[str, object]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity (None when all are finite).

    Nested mappings (an optimiser's state) are searched too, their keys joined with dots.
    """
    for name, value in tensors:
        if isinstance(value, Mapping):
            inner = first_non_finite((f"{name}.{key}", item) for key, item in value.items())
            if inner is not None:
                return inner
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


def state_mismatch(expected: dict[str, torch.Tensor], state: object) -> str:
    """What keeps ``state`` from loading into a network whose state dict is ``expected`` ('' when it fits)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "it holds no state dict of tensors"
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    resized = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if not (missing or unexpected or resized):
        return ""
    counts = f"{len(missing)} missing, {len(unexpected)} unexpected and {len(resized)} differently shaped tensor(s)"
    if resized:
        key = resized[0]
        return (f"{counts}; e.g. {key} has shape {_shape(state[key])} in the file and "
                f"{_shape(expected[key])} in the network")
    return f"{counts}; e.g. {(missing or unexpected)[0]}"


def _shape(tensor: torch.Tensor) -> str:
    return " x ".join(str(size) for size in tensor.shape)
