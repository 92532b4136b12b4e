"""Every tunable of the project in one place.

Training writes an :class:`ExperimentConfig` as ``config.json`` beside the weights, and
inference rebuilds the exact same preprocessing, network and post-processing from it, so
nothing that training chose is hard-coded elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILENAME = "config.json"
CONFIG_FORMAT_VERSION = 1


@dataclass
class PreprocessConfig:
    """How a case is brought from its native grid to the network's grid."""

    target_spacing: tuple[float, float, float] | None = None
    """Voxel size in mm (x, y, z) that every case is resampled to. None: derived from the
    training data when training starts (nnU-Net's rule, see ``hieseg.spacing``) and saved
    resolved in config.json, so inference always reads an explicit grid."""
    crop_margin: int = 4
    """Voxels kept around the brain's bounding box when cropping to the brain."""


@dataclass
class AugmentConfig:
    """Training-time augmentation probabilities and ranges (see ``transforms.py``)."""

    flip_prob: float = 0.5
    rotate90_prob: float = 0.25
    affine_prob: float = 0.2
    rotate_range_deg: float = 12.0
    scale_range: float = 0.1
    elastic_prob: float = 0.1
    noise_prob: float = 0.15
    noise_std: float = 0.1
    blur_prob: float = 0.15
    gamma_prob: float = 0.15
    lowres_prob: float = 0.15
    intensity_prob: float = 0.15


@dataclass
class NetworkConfig:
    """Arguments of ``monai.networks.nets.UNet``."""

    in_channels: int = 2
    out_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.1
    output_prior: float = 0.01
    """Initial lesion probability everywhere: lesions are rare, so training starts near 'no lesion'."""


@dataclass
class LossConfig:
    """Which of the study's losses to train with, and its weights."""

    name: str = "tversky_hausdorffdt"
    tversky_alpha: float = 0.3
    """Tversky weight of false positives."""
    tversky_beta: float = 0.7
    """Tversky weight of false negatives."""
    focal_gamma: float = 2.0
    hausdorff_alpha: float = 2.0
    """Exponent of the distance transform in MONAI's Hausdorff-DT loss."""
    region_weight: float = 0.9
    """Weight of the region term (DiceFocal or Tversky) in the compound losses."""
    boundary_weight: float = 0.1
    """Weight of log(1 + HausdorffDT) in the compound losses."""


@dataclass
class TrainConfig:
    """Optimisation, sampling and validation schedule."""

    patch_size: tuple[int, int, int] = (96, 96, 32)
    batch_size: int = 2
    samples_per_case: int = 2
    lesion_fraction: float = 0.67
    """Share of patches centred on a lesion voxel (the rest on brain or background)."""
    epochs: int = 300
    steps_per_epoch: int = 0
    """0 means one pass over the training cases."""
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    warmup_epochs: int = 5
    grad_clip: float = 1.0
    amp: bool = True
    """Mixed precision; only takes effect on CUDA."""
    validate_every: int = 5
    patience: int = 10
    """Validations without improvement before early stopping (0 disables it)."""
    folds: int = 5
    fold: int = 0
    seed: int = 42
    num_workers: int = 2
    cache_cases: bool = True
    torch_threads: int = 0
    """Intra-op threads of torch while training; 0: the usable cores minus the loader workers
    (at least 1), because threads competing with the workers for cores slow a step many-fold."""


@dataclass
class InferenceConfig:
    """Sliding-window and post-processing settings used by validation and inference."""

    roi_size: tuple[int, int, int] = (96, 96, 32)
    sw_batch_size: int = 4
    overlap: float = 0.25
    blend_mode: str = "gaussian"
    threshold: float = 0.5
    min_component_mm3: float = 0.0
    """Connected components smaller than this are removed (0 keeps all)."""
    tta_flips: bool = False
    amp: bool = True
    """Mixed precision; only takes effect on CUDA."""


@dataclass
class TuningConfig:
    """Post-processing chosen on the validation cases after training (see ``hieseg.tuning``)."""

    enabled: bool = True
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
    min_component_mm3: tuple[float, ...] = (0.0, 10.0, 25.0, 50.0, 100.0)
    try_tta: bool = True
    """Also score flip test-time augmentation, which costs five predictions per case."""
    tta_min_dice_gain: float = 0.01
    """Flip TTA is switched on only when it wins the ranking and adds at least this mean Dice."""


@dataclass
class ExperimentConfig:
    """The whole, self-describing configuration saved with the weights."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    format_version: int = CONFIG_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Build a config, rejecting unknown keys so a typo never passes silently."""
        version = data.get("format_version", CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"config format_version {version} is not supported (expected {CONFIG_FORMAT_VERSION})"
            )
        kwargs: dict[str, Any] = {}
        for name, section_data in data.items():
            if name == "format_version":
                continue
            if name not in _SECTION_TYPES:
                raise ValueError(f"unknown config section {name!r}")
            kwargs[name] = _build_section(_SECTION_TYPES[name], section_data, name)
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ExperimentConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the configuration: {exc}") from exc
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid configuration: {exc}") from exc

    def with_overrides(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """Return a copy with dotted keys (``"train.epochs": 10``) replaced."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in data or key not in data[section]:
                raise ValueError(f"unknown config key {dotted!r}")
            data[section][key] = value
        return ExperimentConfig.from_dict(data)


_SECTION_TYPES: dict[str, type] = {
    "preprocess": PreprocessConfig,
    "augment": AugmentConfig,
    "network": NetworkConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "inference": InferenceConfig,
    "tuning": TuningConfig,
}


def _build_section(section_type: type, data: dict[str, Any], name: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(section_type)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in section {name!r}: {', '.join(unknown)}")
    return section_type(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})
