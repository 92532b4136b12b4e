"""Whole-case prediction: native images in, native-grid lesion probability and mask out.

The same code serves validation during training and the challenge container, so what is
scored while training is exactly what is submitted.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, Spacingd

from hieseg.brain import brain_of
from hieseg.config import CONFIG_FILENAME, ExperimentConfig, InferenceConfig
from hieseg.errors import ConfigError, ModelError
from hieseg.image_io import from_xyz_array
from hieseg.layout import CaseImages
from hieseg.network import build_network, network_of_state
from hieseg.postprocess import final_mask
from hieseg.provenance import warn_on_version_drift
from hieseg.resampling import invert_resampling_on_support
from hieseg.transforms import IMAGE, case_to_dict, inference_transforms

LOG = logging.getLogger(__name__)
WEIGHTS_PATTERN = "*.pt"
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"

@dataclass
class ModelBundle:
    """The networks of a weights folder (one per fold) and the configuration they were trained with."""

    config: ExperimentConfig
    networks: list[torch.nn.Module]
    weight_files: list[Path]


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else CPU; the CPU fallback is logged, never silent.

    Only the devices the project supports are accepted (``DEVICE_CHOICES``); anything else,
    or a GPU that is not there, is a :class:`ConfigError`.
    """
    if not DEVICE_PATTERN.fullmatch(requested):
        raise ConfigError(f"--device {requested}: not a supported device; use {DEVICE_CHOICES}")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        LOG.warning("CUDA is not available: running on the CPU (slower)")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not available:
            raise ConfigError(f"--device {requested}: CUDA is not available on this machine")
        if (device.index or 0) >= available:
            raise ConfigError(f"--device {requested}: this machine has {available} CUDA device(s), cuda:0 to "
                              f"cuda:{available - 1}")
    return device


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
    return ModelBundle(config=config, networks=networks, weight_files=weight_files)


def load_network(config: ExperimentConfig, path: Path, device: torch.device) -> torch.nn.Module:
    """The network of ``config`` with the weights of ``path``; a file that is not such weights is a :class:`ModelError`."""
    network = build_network(config)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, EOF) for a damaged file
        raise ModelError(f"{path}: unreadable weights file ({path.stat().st_size} bytes): not a state dict "
                         "saved by train.py, or truncated or corrupt") from exc
    problem = _state_mismatch(network.state_dict(), state)
    other = network_of_state(state) if problem and isinstance(state, dict) else None
    if other is not None and other != config.network.name:
        raise ModelError(f"{path}: weights of network {other}, but {CONFIG_FILENAME} names network "
                         f"{config.network.name}; the weights of one folder are ensembled, so they must all be of "
                         f"its {CONFIG_FILENAME}'s network")
    if problem:
        raise ModelError(f"{path}: incompatible with the network of {CONFIG_FILENAME}: {problem}")
    network.load_state_dict(state)
    return network.to(device).eval()


def _state_mismatch(expected: dict[str, torch.Tensor], state: object) -> str:
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


class Predictor:
    """Predicts lesion masks for whole cases with an ensemble of networks."""

    def __init__(
        self,
        config: ExperimentConfig,
        networks: list[torch.nn.Module],
        device: torch.device,
        settings: InferenceConfig | None = None,
    ) -> None:
        self.config = config
        self.networks = networks
        self.device = device
        self.settings = settings or config.inference
        self.transforms = inference_transforms(config)
        if not isinstance(self.transforms.transforms[0], Spacingd):
            raise ValueError("the inference transforms must start with the resampling (Spacingd)")
        self._after_resampling = Compose(self.transforms.transforms[1:])

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, device: torch.device, **overrides: object) -> Predictor:
        """A predictor for a loaded weights folder, with inference settings optionally overridden."""
        settings = dataclasses.replace(bundle.config.inference, **overrides)
        return cls(bundle.config, bundle.networks, device, settings)

    def probability(self, case: CaseImages) -> np.ndarray:
        """Lesion probability on the case's native grid, axes (x, y, z); 0 outside the brain (ADC > 0)."""
        network_input = self.preprocess(case)
        return self.to_native(self.predict(network_input), network_input) * brain_of(case.adc)

    def preprocess(self, case: CaseImages) -> MetaTensor:
        """The resampled, normalised, brain-cropped 2-channel input, carrying its inversion record."""
        return self.transforms(case_to_dict(case))[IMAGE]

    def predict(self, network_input: MetaTensor) -> torch.Tensor:
        """Lesion probability (1, X, Y, Z) on the network's grid (CPU or the predictor's device)."""
        batch = network_input.as_tensor()[None].to(self.device)
        with torch.inference_mode():
            return self._ensemble_probability(batch)[0]

    def to_native(self, probability: torch.Tensor, network_input: MetaTensor) -> np.ndarray:
        """Bring a network-grid probability back to the native grid: undo the crop, then the resampling.

        Undoing the crop zero-pads the probability to the resampled grid; undoing the resampling
        is done by :func:`invert_resampling_on_support`, which interpolates only the native box
        that the brain crop covers, where MONAI's inverse would interpolate the whole native grid.
        The record is copied because MONAI's inverse consumes it, so the input can be inverted again.
        """
        tracked = MetaTensor(
            probability.float().cpu(),
            meta=network_input.meta,
            applied_operations=copy.deepcopy(network_input.applied_operations),
        )
        resampled = self._after_resampling.inverse({IMAGE: tracked})[IMAGE]
        return invert_resampling_on_support(resampled)[0].numpy()

    def mask(self, case: CaseImages) -> np.ndarray:
        """Binary uint8 lesion mask on the native grid, axes (x, y, z)."""
        return final_mask(
            self.probability(case),
            case.adc.GetSpacing(),
            self.settings.threshold,
            self.settings.min_component_mm3,
            self.settings.empty_fallback_probability,
        )

    def mask_image(self, case: CaseImages) -> sitk.Image:
        """The mask as an image with exactly the ADC's size, spacing, origin and direction."""
        return from_xyz_array(self.mask(case), case.adc)

    def _ensemble_probability(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid probability over networks and (optionally) flips of the spatial axes."""
        flips: list[tuple[int, ...]] = [()]
        if self.settings.tta_flips:
            flips += [(2,), (3,), (4,), (2, 3)]
        total = torch.zeros_like(batch[:, :1], dtype=torch.float32)
        for network in self.networks:
            for axes in flips:
                flipped = torch.flip(batch, axes) if axes else batch
                logits = self._sliding_window(network, flipped)
                probability = torch.sigmoid(logits.float())
                total += torch.flip(probability, axes) if axes else probability
        return total / (len(self.networks) * len(flips))

    def _sliding_window(self, network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        use_amp = self.settings.amp and self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
        with autocast:
            return sliding_window_inference(
                batch,
                roi_size=self.settings.roi_size,
                sw_batch_size=self.settings.sw_batch_size,
                predictor=network,
                overlap=self.settings.overlap,
                mode=self.settings.blend_mode,
            )

