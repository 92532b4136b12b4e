"""Every tunable of the project in one place, each checked where it is built.

Training writes an :class:`ExperimentConfig` as ``config.json`` beside the weights, and
inference rebuilds the exact same preprocessing, network and post-processing from it, so
nothing that training chose is hard-coded elsewhere.

Every section validates itself when it is constructed (also by ``dataclasses.replace``):
the type of each value from its annotation (whole numbers, finite numbers, true/false, text,
lists of a given length), then the range or choices declared beside the field with
:func:`setting`, then the rules that tie fields together. Defaults, ``config.json``, the
flags and ``--set`` all pass through it, so a bad value fails as :class:`ConfigError`,
naming the setting, before any work starts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hieseg.errors import ConfigError

CONFIG_FILENAME = "config.json"
CONFIG_FORMAT_VERSION = 1
LOSS_NAMES: tuple[str, ...] = (
    "dice",
    "dicefocal",
    "tversky",
    "hausdorffdt",
    "dicefocal_hausdorffdt",
    "tversky_hausdorffdt",
)
"""The study's six losses, in its order (built by ``hieseg.losses``)."""

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    """A constraint on a setting's value (on each item of a list setting), and how to say it."""

    holds: Check
    text: str


def between(low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False) -> Rule:
    """Values in an interval; ``None`` leaves that side unbounded."""

    def holds(value: float) -> bool:
        above = low is None or (value > low if open_low else value >= low)
        below = high is None or (value < high if open_high else value <= high)
        return above and below

    if high is None:
        text = f"{'>' if open_low else '>='} {_number(low)}"
    elif low is None:
        text = f"{'<' if open_high else '<='} {_number(high)}"
    else:
        text = f"in {'(' if open_low else '['}{_number(low)}, {_number(high)}{')' if open_high else ']'}"
    return Rule(holds, text)


def one_of(*choices: object) -> Rule:
    return Rule(lambda value: value in choices, "one of " + ", ".join(str(c) for c in choices))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE = between(0, open_low=True)
NON_NEGATIVE = between(0)
AT_LEAST_ONE = between(1)
PROBABILITY = between(0, 1)
OPEN_UNIT = between(0, 1, open_low=True, open_high=True)


def setting(default: Any, rule: Rule) -> Any:
    """A field with its default and the rule its value (each item, for a list) must follow."""
    return field(default=default, metadata={"rule": rule})


class _Section:
    """Validation shared by the sections: types, then each field's rule, then :meth:`check_together`."""

    def __post_init__(self) -> None:
        section = _section_name(type(self))
        hints = _type_hints(type(self))
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            name = f"{section}.{item.name}"
            value = _coerce(getattr(self, item.name), hints[item.name], name)
            rule = item.metadata.get("rule")
            if rule is not None and value is not None:
                values = value if isinstance(value, tuple) else (value,)
                if not all(rule.holds(v) for v in values):
                    what = "each value must" if isinstance(value, tuple) else "must"
                    raise ConfigError(f"{name}: {what} be {rule.text}, got {_shown(value)}")
            object.__setattr__(self, item.name, value)
        self.check_together()

    def check_together(self) -> None:
        """Rules between fields of the section; none by default."""


@dataclass
class PreprocessConfig(_Section):
    """How a case is brought from its native grid to the network's grid."""

    target_spacing: tuple[float, float, float] | None = setting(None, POSITIVE)
    """Voxel size in mm (x, y, z) that every case is resampled to. None: derived from the
    training data when training starts (nnU-Net's rule, see ``hieseg.spacing``) and saved
    resolved in config.json, so inference always reads an explicit grid."""
    crop_margin: int = setting(4, NON_NEGATIVE)
    """Voxels kept around the brain's bounding box when cropping to the brain."""


@dataclass
class AugmentConfig(_Section):
    """Training-time augmentation probabilities and ranges (see ``transforms.py``)."""

    flip_prob: float = setting(0.5, PROBABILITY)
    rotate90_prob: float = setting(0.25, PROBABILITY)
    affine_prob: float = setting(0.2, PROBABILITY)
    rotate_range_deg: float = setting(12.0, between(0, 180))
    scale_range: float = setting(0.1, between(0, 1, open_high=True))
    elastic_prob: float = setting(0.1, PROBABILITY)
    noise_prob: float = setting(0.15, PROBABILITY)
    noise_std: float = setting(0.1, NON_NEGATIVE)
    blur_prob: float = setting(0.15, PROBABILITY)
    gamma_prob: float = setting(0.15, PROBABILITY)
    lowres_prob: float = setting(0.15, PROBABILITY)
    intensity_prob: float = setting(0.15, PROBABILITY)


@dataclass
class NetworkConfig(_Section):
    """Arguments of ``monai.networks.nets.UNet``."""

    in_channels: int = setting(2, one_of(2))
    """ADC and Z_ADC: the preprocessing always stacks these two."""
    out_channels: int = setting(1, one_of(1))
    """One lesion logit per voxel (sigmoid); the losses and the predictor expect it."""
    channels: tuple[int, ...] = setting((16, 32, 64, 128), AT_LEAST_ONE)
    strides: tuple[int, ...] = setting((2, 2, 2), AT_LEAST_ONE)
    num_res_units: int = setting(2, NON_NEGATIVE)
    norm: str = setting("instance", one_of("instance", "batch"))
    dropout: float = setting(0.1, between(0, 1, open_high=True))
    output_prior: float = setting(0.01, OPEN_UNIT)
    """Initial lesion probability everywhere: lesions are rare, so training starts near 'no lesion'."""

    def check_together(self) -> None:
        if len(self.strides) != len(self.channels) - 1:
            raise ConfigError(
                f"network.strides: one stride per down-sampling step, so {len(self.channels) - 1} for "
                f"{len(self.channels)} channel levels, got {len(self.strides)}"
            )


@dataclass
class LossConfig(_Section):
    """Which of the study's losses to train with, and its weights."""

    name: str = setting("tversky_hausdorffdt", one_of(*LOSS_NAMES))
    tversky_alpha: float = setting(0.3, NON_NEGATIVE)
    """Tversky weight of false positives."""
    tversky_beta: float = setting(0.7, NON_NEGATIVE)
    """Tversky weight of false negatives."""
    focal_gamma: float = setting(2.0, NON_NEGATIVE)
    hausdorff_alpha: float = setting(2.0, POSITIVE)
    """Exponent of the distance transform in MONAI's Hausdorff-DT loss."""
    region_weight: float = setting(0.9, NON_NEGATIVE)
    """Weight of the region term (DiceFocal or Tversky) in the compound losses."""
    boundary_weight: float = setting(0.1, NON_NEGATIVE)
    """Weight of log(1 + HausdorffDT) in the compound losses."""


@dataclass
class TrainConfig(_Section):
    """Optimisation, sampling and validation schedule."""

    patch_size: tuple[int, int, int] = setting((96, 96, 32), AT_LEAST_ONE)
    batch_size: int = setting(2, AT_LEAST_ONE)
    samples_per_case: int = setting(2, AT_LEAST_ONE)
    lesion_fraction: float = setting(0.67, PROBABILITY)
    """Share of patches centred on a lesion voxel (the rest on other brain voxels)."""
    epochs: int = setting(300, AT_LEAST_ONE)
    steps_per_epoch: int = setting(0, NON_NEGATIVE)
    """0 means one pass over the training cases."""
    learning_rate: float = setting(1e-3, POSITIVE)
    weight_decay: float = setting(1e-5, NON_NEGATIVE)
    warmup_epochs: int = setting(5, NON_NEGATIVE)
    grad_clip: float = setting(1.0, POSITIVE)
    amp: bool = True
    """Mixed precision; only takes effect on CUDA."""
    validate_every: int = setting(5, AT_LEAST_ONE)
    patience: int = setting(10, NON_NEGATIVE)
    """Validations without improvement before early stopping (0 disables it)."""
    folds: int = setting(5, between(2))
    fold: int = setting(0, NON_NEGATIVE)
    seed: int = setting(42, between(0, 2**32 - 1))
    """Seeds numpy too, whose seeds are 32-bit."""
    num_workers: int = setting(2, NON_NEGATIVE)
    cache_cases: bool = True
    torch_threads: int = setting(0, NON_NEGATIVE)
    """Intra-op threads of torch while training; 0: the usable cores minus the loader workers
    (at least 1), because threads competing with the workers for cores slow a step many-fold."""

    def check_together(self) -> None:
        if self.fold >= self.folds:
            raise ConfigError(f"train.fold: must be in [0, {self.folds - 1}] for {self.folds} folds, got {self.fold}")


@dataclass
class InferenceConfig(_Section):
    """Sliding-window and post-processing settings used by validation and inference."""

    roi_size: tuple[int, int, int] = setting((96, 96, 32), AT_LEAST_ONE)
    sw_batch_size: int = setting(4, AT_LEAST_ONE)
    overlap: float = setting(0.25, between(0, 1, open_high=True))
    blend_mode: str = setting("gaussian", one_of("gaussian", "constant"))
    threshold: float = setting(0.5, OPEN_UNIT)
    """Lesion where the probability is at least this; 0 or 1 would call everything or nothing lesion."""
    min_component_mm3: float = setting(0.0, NON_NEGATIVE)
    """Connected components smaller than this are removed (0 keeps all)."""
    empty_fallback_probability: float = setting(0.0, between(0, 1, open_high=True))
    """When the mask comes out empty but the peak probability reaches this, the component around
    the peak is kept (0: off). An empty mask of a lesioned case costs the whole image diagonal in
    MASD, so a model unsure about a faint lesion may do better naming its best guess."""
    tta_flips: bool = False
    amp: bool = True
    """Mixed precision; only takes effect on CUDA."""


@dataclass
class TuningConfig(_Section):
    """Post-processing chosen on the validation cases after training (see ``hieseg.tuning``)."""

    enabled: bool = True
    thresholds: tuple[float, ...] = setting((0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), OPEN_UNIT)
    min_component_mm3: tuple[float, ...] = setting((0.0, 10.0, 25.0, 50.0, 100.0), NON_NEGATIVE)
    empty_fallback_probability: tuple[float, ...] = setting((0.0, 0.02, 0.05, 0.1, 0.3), between(0, 1, open_high=True))
    """Candidates of ``inference.empty_fallback_probability``; 0 is 'off'. Low values matter: an empty mask of a
    lesioned case scores the capped MASD, so a faint guess near the peak can beat silence."""
    try_tta: bool = True
    """Also score flip test-time augmentation, which costs five predictions per case."""
    tta_min_dice_gain: float = setting(0.01, NON_NEGATIVE)
    """Flip TTA is switched on only when it wins the ranking and adds at least this mean Dice (above 1: never)."""


@dataclass
class ProvenanceConfig(_Section):
    """What made the weights: library versions and the code's commit, recorded by training.

    Not a setting: two runs that differ only here trained with the same configuration, so
    resuming and adding folds ignore it, and a config.json used as ``--config`` drops it.
    """

    torch: str | None = None
    monai: str | None = None
    simpleitk: str | None = None
    hieseg: str | None = None
    git_commit: str | None = None
    """The commit of the checkout the code ran from; None for an installed package or outside git."""
    git_dirty: bool | None = None
    """Whether tracked files of that checkout differed from the commit (uncommitted changes)."""


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
    provenance: ProvenanceConfig | None = None
    """Set in the config.json written by training (``hieseg.provenance``); None in older files."""
    format_version: int = CONFIG_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data; no ``provenance`` key when there is none, as in older files."""
        data = dataclasses.asdict(self)
        if data["provenance"] is None:
            del data["provenance"]
        return data

    def settings_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the provenance: what two configs must share for their weights to mix."""
        data = self.to_dict()
        data.pop("provenance", None)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Build a config, rejecting unknown keys so a typo never passes silently, and checking every value."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected an object of sections, got {_shown(data)}")
        version = data.get("format_version", CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            raise ConfigError(
                f"config format_version {_shown(version)} is not supported (expected {CONFIG_FORMAT_VERSION})"
            )
        kwargs: dict[str, Any] = {}
        for name, section_data in data.items():
            if name == "format_version":
                continue
            if name not in _SECTION_TYPES:
                raise ConfigError(f"unknown config section {name!r}")
            kwargs[name] = _build_section(_SECTION_TYPES[name], section_data, name)
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ExperimentConfig:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the configuration, not valid JSON ({exc})") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: invalid configuration: {exc}") from exc

    def with_overrides(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """Return a copy with dotted keys (``"train.epochs": 10``) replaced."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in data or not isinstance(data[section], dict) or key not in data[section]:
                raise ConfigError(f"unknown config key {dotted!r}")
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
    "provenance": ProvenanceConfig,
}


def _build_section(section_type: type, data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"section {name!r} must be an object of settings, got {_shown(data)}")
    known = {f.name for f in dataclasses.fields(section_type)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in section {name!r}: {', '.join(unknown)}")
    return section_type(**data)


def _section_name(section_type: type) -> str:
    return next(name for name, known in _SECTION_TYPES.items() if known is section_type)


@functools.cache
def _type_hints(section_type: type) -> dict[str, Any]:
    return typing.get_type_hints(section_type)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the annotated type (lists become tuples, whole numbers in a float field floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner, name)
    if origin is tuple:
        variable = len(args) == 2 and args[1] is Ellipsis
        item = args[0]
        wanted = "one or more" if variable else str(len(args))
        noun = {int: "whole numbers", float: "numbers"}.get(item, "values")
        if not isinstance(value, (list, tuple)) or (len(value) == 0 if variable else len(value) != len(args)):
            raise ConfigError(f"{name}: expected a list of {wanted} {noun}, got {_shown(value)}")
        return tuple(_coerce(v, item, name) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {_shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name}: expected a whole number, got {_shown(value)}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{name}: expected a number, got {_shown(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {_shown(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected text, got {_shown(value)}")
        return value
    raise TypeError(f"{name}: no validation for the annotation {hint!r}")


def _shown(value: Any) -> str:
    """A value as the user wrote it: JSON where possible (``"high"``, ``nan``, ``[1, 2]``)."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
