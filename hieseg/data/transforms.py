"""MONAI transform pipelines shared by training, validation and inference.

A case enters as a dictionary with a 2-channel ``image`` (ADC, Z_ADC), both set to 0 outside
the brain (ADC > 0, :mod:`hieseg.io.brain`), and optionally a 1-channel ``label``, all
:class:`monai.data.MetaTensor` carrying the native affine. Each channel is z-scored over the
brain (``preprocess.normalization``): on the native grid before resampling (:class:`NormalizeNatived`,
the default, as nnU-Net normalises), or on the network grid after it (:class:`NormalizeInBraind`, the
weights of config format 1 and 2). Z_ADC is z-scored too, or, with ``preprocess.zadc_normalization``
``centred``, keeps its own units and only loses the brain's median. The brain on the network grid
(``brain``) is what the crop keeps and the training patches are drawn from. Every spatial step is a
MONAI invertible transform, so a prediction made on the network's grid is brought back to the native
grid with :func:`invert_to_native` (MONAI's inverse, the reference); the predictor uses the equal but
faster ``hieseg.data.resampling`` for the last step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    DeleteItemsd,
    MapTransform,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    Spacingd,
    SpatialPadd,
)
from monai.transforms.utils import map_classes_to_indices
from scipy import ndimage

from hieseg.config.settings import (
    ZADC_NORMALIZATIONS,
    AugmentConfig,
    ExperimentConfig,
    PreprocessConfig,
    TrainConfig,
)
from hieseg.errors import ConfigError, ImageError
from hieseg.io.brain import brain_mask
from hieseg.io.images import Geometry, to_xyz_array
from hieseg.io.layout import CaseImages

IMAGE = "image"
LABEL = "label"
BRAIN = "brain"
"""The brain on the network grid (1 channel, uint8, 1 inside), made by :class:`BrainOnGridd` or :class:`NormalizeInBraind`."""
SAMPLING = "sampling"
"""What a training patch may be centred on (1 channel, on the network grid): :data:`SAMPLING_CLASSES`."""
SAMPLING_CLASSES = ("other brain", "lesion", "lesion mimic")
"""The classes of :data:`SAMPLING`, by value; outside the brain no patch is centred."""
SAMPLING_INDICES = "sampling_indices"
"""Each :data:`SAMPLING_CLASSES` class's flat voxel indices a patch may be centred on (:class:`SamplingIndicesd`),
lesions balanced with ``train.lesion_sampling`` ``lesion``."""
LESION_INDEX_COUNT = 4096
"""Entries each lesion takes in the lesion class's index list: larger lesions give an even subset of their voxels,
smaller ones repeat theirs, so every lesion is drawn alike while a case's list stays small enough to cache."""
MAX_GRID_VOXELS = 2**27
"""Largest network grid a case may need (about 134 million voxels, 0.5 GB per float channel): the largest release
case (256 x 256 x 64 at 2 x 2 x 6 mm) needs 35 million on the usual 1 x 1 x 2.9 mm grid."""
BRAIN_COVER = 0.5
"""A network-grid voxel is brain where the resampled native brain (0/1, bilinear) reaches this."""
ADC_FENCE_PERCENTILES = (1.0, 99.0)
"""The brain's ADC percentiles that span its tissue contrast, from restricted-diffusion lesions (~400) to CSF
(~3,000 x 10^-6 mm^2/s, free water at body temperature); a few voxels cannot move them (20 wild voxels are
0.2 % of the smallest brain seen, 7,700 voxels)."""
ADC_FENCE_SPREAD = 2.0
"""How far, in P1-P99 spreads, the ADC may lie beyond P1 or P99 before it is clipped (:func:`adc_fence`).

Measured: no voxel of test/input, the 24 foreign phantoms, the 40 family-a training cases or any profile
of the generator lies more than 0.39 spreads beyond them (noise in CSF, partial volume at the brain's edge),
so 2 keeps a 5-fold margin and leaves every real-looking case bit for bit as before, while a fitting
failure of 10^5 or 10^6 (30-300 times free water) is brought back to ~8,000 and cannot dominate the std."""


def check_network_grid(path: Path, image: sitk.Image, target_spacing: Sequence[float]) -> None:
    """Refuse, before any resampling, an image whose grid of ``target_spacing`` would exceed ``MAX_GRID_VOXELS``,
    naming its file, its spacing and the grid it would need."""
    spacing, size = image.GetSpacing(), image.GetSize()
    grid = [math.ceil(n * step / target) for n, step, target in zip(size, spacing, target_spacing)]
    if math.prod(grid) > MAX_GRID_VOXELS:
        raise ImageError(
            f"{path}: {' x '.join(map(str, size))} voxels of {' x '.join(f'{s:g}' for s in spacing)} mm "
            f"would need a grid of {' x '.join(map(str, grid))} voxels at "
            f"{' x '.join(f'{s:g}' for s in target_spacing)} mm, over the {MAX_GRID_VOXELS:,} accepted; "
            "check the spacing in the image header")


def case_to_dict(case: CaseImages) -> dict[str, object]:
    """Stack ADC and Z_ADC into a 2-channel MetaTensor on the native grid (plus the label).

    Both channels are set to 0 outside the brain (ADC > 0), so whatever the ADC's background
    value was, or wherever the Z_ADC strays, every later step sees the same input.
    """
    affine = torch.as_tensor(Geometry.of(case.adc).affine(), dtype=torch.float64)
    adc = to_xyz_array(case.adc)
    brain = brain_mask(adc)
    image = np.stack([np.where(brain, adc, 0), np.where(brain, to_xyz_array(case.zadc), 0)]).astype(np.float32)
    data: dict[str, object] = {IMAGE: MetaTensor(image, affine=affine), "case_id": case.files.case_id}
    if case.label is not None:
        data[LABEL] = MetaTensor(to_xyz_array(case.label)[None], affine=affine.clone())
    return data


class NormalizeInBraind(MapTransform):
    """Z-score each image channel over the brain on the network grid (resampled ADC channel > 0; Z_ADC as
    ``zadc`` says, see :func:`normalised_channels`) and set the rest to 0; record the brain
    (``preprocess.normalization`` ``network_grid``, weights of config format 1 and 2).

    On a native ADC that is exactly 0 outside the brain, this equals MONAI's
    ``NormalizeIntensityd(nonzero=True, channel_wise=True)`` wherever Z_ADC is non-zero inside
    the brain; the brain is written under :data:`BRAIN` for the crop and the patch sampling.
    """

    def __init__(self, zadc: str = "z_score") -> None:
        super().__init__(keys=[IMAGE])
        self.zadc = zadc

    def __call__(self, data: dict) -> dict:
        return _normalised_in_brain(data, torch.uint8, self.zadc)


class NormalizeNatived(MapTransform):
    """Z-score each image channel over the native brain (ADC channel > 0; Z_ADC as ``zadc`` says, see
    :func:`normalised_channels`), before any resampling, and set the rest to 0; record the brain as a 0/1
    float channel, resampled beside the image.

    The statistics are those of the acquired tissue: no voxel blended with the background by the
    resampling enters them, whatever the slice thickness or the brain's size.
    """

    def __init__(self, zadc: str = "z_score") -> None:
        super().__init__(keys=[IMAGE])
        self.zadc = zadc

    def __call__(self, data: dict) -> dict:
        return _normalised_in_brain(data, torch.float32, self.zadc)


class BrainOnGridd(MapTransform):
    """After the resampling of :class:`NormalizeNatived`'s output: the brain on the network grid is where the
    resampled native brain covers at least half a voxel; the image is set to 0 outside it."""

    def __init__(self) -> None:
        super().__init__(keys=[IMAGE])

    def __call__(self, data: dict) -> dict:
        result = dict(data)
        image, brain = data[IMAGE], data[BRAIN].as_tensor()[0] >= BRAIN_COVER
        result[IMAGE] = MetaTensor(image.as_tensor() * brain, meta=image.meta,
                                   applied_operations=list(image.applied_operations))
        result[BRAIN] = MetaTensor(brain[None].to(torch.uint8), meta=data[BRAIN].meta)
        return result


def _normalised_in_brain(data: dict, brain_dtype: torch.dtype, zadc: str) -> dict:
    """``data`` with its image normalised over the brain (ADC channel > 0) and the brain under :data:`BRAIN`.

    Each gets its own copy of the image's metadata, so that resampling one key never moves the other's affine.
    """
    result = dict(data)
    image = data[IMAGE]
    values = image.as_tensor().float()
    brain = values[0] > 0
    result[IMAGE] = MetaTensor(normalised_channels(values, brain, zadc), meta=copy.deepcopy(image.meta),
                               applied_operations=list(image.applied_operations))
    result[BRAIN] = MetaTensor(brain[None].to(brain_dtype), meta=copy.deepcopy(image.meta))
    return result


def normalised_channels(values: torch.Tensor, brain: torch.Tensor, zadc: str) -> torch.Tensor:
    """ADC (channel 0) z-scored over ``brain``, Z_ADC (channel 1) z-scored too (``zadc`` ``z_score``) or only
    centred on the brain's median (``centred``); 0 outside ``brain``. A constant channel is only centred. The ADC
    is first clipped to :func:`adc_fence`, so a few wild voxels cannot flatten the z-score.

    Z_ADC is already a z-score against a normative model: its units say how abnormal a voxel is. Its std over
    one brain mostly measures that atlas's errors and the lesion burden, so dividing by it makes the same lesion
    read deeper on a good atlas than on a poor one; centring alone removes the atlas's global offset and keeps
    the units (``preprocess.zadc_normalization``)."""
    if zadc not in ZADC_NORMALIZATIONS:
        raise ConfigError(f"preprocess.zadc_normalization must be one of {', '.join(ZADC_NORMALIZATIONS)}, "
                          f"got {zadc!r}")
    normalised = torch.zeros_like(values)
    for channel, channel_values in enumerate(values):
        inside = channel_values[brain]
        if not inside.numel():
            continue
        if channel == 1 and zadc == "centred":
            normalised[channel][brain] = inside - float(torch.median(inside))
            continue
        if channel == 0:
            inside = inside.clamp(*adc_fence(inside))
        mean, std = float(torch.mean(inside)), float(torch.std(inside, unbiased=False))
        normalised[channel][brain] = (inside - mean) / (std if std != 0.0 else 1.0)
    return normalised


def adc_fence(inside: torch.Tensor) -> tuple[float, float]:
    """The range the brain's ADC values ``inside`` are clipped to before their mean and std: ``ADC_FENCE_SPREAD``
    P1-P99 spreads beyond P1 and P99 (``ADC_FENCE_PERCENTILES``).

    The mean and std of a z-score are not robust: one voxel at 10^6 among 8,500 of 400-3,500 makes the std 40
    times larger and flattens the lesions' contrast (0.33 ml instead of 15.6). Percentiles ignore such voxels, and the fence lies far
    outside the tissue of any real-looking case, so clean data are not changed at all (Z_ADC needs no fence:
    its range is checked when it is read, :func:`hieseg.io.intensities.check_intensities`)."""
    low, high = np.percentile(inside.detach().cpu().numpy(), ADC_FENCE_PERCENTILES)
    spread = float(high - low)
    return float(low) - ADC_FENCE_SPREAD * spread, float(high) + ADC_FENCE_SPREAD * spread


def preprocess_transforms(config: PreprocessConfig, with_label: bool) -> list:
    """Normalise and resample to the target spacing, in the order ``config.normalization`` says; the
    result carries the brain on the network grid under :data:`BRAIN`."""
    if config.target_spacing is None:
        raise ConfigError("preprocess.target_spacing is unset: training derives it from the data, so a "
                          "config.json used for prediction must hold it")
    labels = [(LABEL, "nearest")] if with_label else []
    if config.normalization == "network_grid":
        return [resampling(config, [(IMAGE, "bilinear"), *labels]), NormalizeInBraind(config.zadc_normalization)]
    return [NormalizeNatived(config.zadc_normalization),
            resampling(config, [(IMAGE, "bilinear"), (BRAIN, "bilinear"), *labels]), BrainOnGridd()]


def resampling(config: PreprocessConfig, keys_and_modes: list[tuple[str, str]]) -> Spacingd:
    """The preprocessing's one resampling step: these keys to the target spacing, each with its interpolation.

    Keys may be missing, so that its inverse brings a prediction (``image`` alone) back to the native grid.
    """
    return Spacingd(keys=[key for key, _ in keys_and_modes], pixdim=config.target_spacing,
                    mode=[mode for _, mode in keys_and_modes], allow_missing_keys=True)


def brain_crop(config: PreprocessConfig, keys: list[str]) -> CropForegroundd:
    """Crop ``keys`` to the brain's bounding box plus a margin."""
    return CropForegroundd(
        keys=keys,
        source_key=BRAIN,
        select_fn=lambda x: x > 0,
        margin=config.crop_margin,
        allow_smaller=True,
    )


def inference_transforms(config: ExperimentConfig) -> Compose:
    """Native case -> cropped, normalised network input; invertible for the prediction."""
    return Compose(
        preprocess_transforms(config.preprocess, with_label=False) + [brain_crop(config.preprocess, [IMAGE])]
    )


def training_transforms(config: ExperimentConfig) -> Compose:
    """Deterministic preprocessing (cached, with each sampling class's voxel list), then lesion-oversampling patches
    and augmentation.

    Patches are centred on a lesion voxel (share ``lesion_fraction``), on a lesion mimic (share
    ``mimic_fraction``, :class:`SamplingClassesd`) or on another brain voxel, never on the background. With
    ``lesion_sampling`` ``lesion`` each lesion of a case is drawn alike. The voxel lists are made once per case
    (:class:`SamplingIndicesd`): MONAI's crop would otherwise rebuild them from the whole case for every patch,
    which took a third of a patch's time on the CPU, the rest of its augmentation included.
    """
    train = config.train
    patch = train.patch_size
    keys = [IMAGE, LABEL]
    deterministic = preprocess_transforms(config.preprocess, with_label=True) + [
        brain_crop(config.preprocess, [*keys, BRAIN]),
        SpatialPadd(keys=[*keys, BRAIN], spatial_size=patch),
        SamplingClassesd(train, config.preprocess.target_spacing),
        SamplingIndicesd(by_lesion=train.lesion_sampling == "lesion"),
        DeleteItemsd(keys=[BRAIN, SAMPLING]),
    ]
    sampling = RandCropByLabelClassesd(
        keys=keys,
        label_key=LABEL,
        spatial_size=patch,
        ratios=[1.0 - train.lesion_fraction - train.mimic_fraction, train.lesion_fraction, train.mimic_fraction],
        num_classes=len(SAMPLING_CLASSES),
        num_samples=train.samples_per_case,
        indices_key=SAMPLING_INDICES,
        warn=False,
    )
    return Compose([*deterministic, sampling, *augmentations(config.augment, patch)])


class SamplingClassesd(MapTransform):
    """The :data:`SAMPLING` map of a case on the network grid: lesion (the label), lesion mimic (a brain voxel whose
    Z_ADC channel is under ``train.mimic_zadc`` and that lies over ``train.mimic_distance_mm`` from every lesion
    voxel), other brain.

    A network that only meets such voxels in random patches learns little about them, yet they are what a false
    lesion is made of: centring a share of the patches on them shows the network the difference where it
    matters. A class a case lacks (no mimic, or no lesion) gets no patch from that case. With no share for mimics
    (``train.mimic_fraction`` 0) none is marked, so every brain voxel off the lesions is other brain.
    """

    def __init__(self, train: TrainConfig, spacing: Sequence[float] | None) -> None:
        super().__init__(keys=[LABEL])
        self.mimics = train.mimic_fraction > 0.0
        self.threshold, self.distance_mm = train.mimic_zadc, train.mimic_distance_mm
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None

    def __call__(self, data: dict) -> dict:
        result = dict(data)
        label = data[LABEL].as_tensor()[0].numpy() > 0
        classes = np.zeros(label.shape, dtype=np.uint8)
        if self.mimics:
            brain = data[BRAIN].as_tensor()[0].numpy() > 0
            zadc = data[IMAGE].as_tensor()[1].numpy()
            far = (ndimage.distance_transform_edt(~label, sampling=self.spacing) > self.distance_mm
                   if label.any() else np.ones(label.shape, dtype=bool))
            classes[brain & (zadc < self.threshold) & far] = 2
        classes[label] = 1
        result[SAMPLING] = MetaTensor(torch.from_numpy(classes[None]), meta=copy.deepcopy(data[LABEL].meta))
        return result


class SamplingIndicesd(MapTransform):
    """:data:`SAMPLING_INDICES` from :data:`SAMPLING` and the brain: each class's voxels in the brain, as MONAI's
    crop finds them itself without a list (``map_classes_to_indices``); with ``by_lesion`` the lesion class's then
    as :data:`LESION_INDEX_COUNT` entries per lesion.

    Made once per case and cached with the preprocessed volumes, so the crop only draws from it. Drawn voxel by
    voxel, a patch lands on a lesion in proportion to its volume: a case with a 10 ml lesion and a 0.1 ml one shows
    the small one in about one lesion patch of a hundred, though small lesions are most of the lesions a network
    misses. Drawing the lesion first (``by_lesion``) gives each the same share.
    """

    def __init__(self, by_lesion: bool) -> None:
        super().__init__(keys=[SAMPLING])
        self.by_lesion = by_lesion

    def __call__(self, data: dict) -> dict:
        result = dict(data)
        indices = [np.asarray(found, dtype=np.int32) for found in map_classes_to_indices(
            data[SAMPLING], len(SAMPLING_CLASSES), data[BRAIN], image_threshold=0.0)]
        if self.by_lesion:
            lesion = np.zeros(data[SAMPLING].shape[1:], dtype=bool)
            lesion.flat[indices[1]] = True
            indices[1] = balanced_lesion_indices(lesion)
        result[SAMPLING_INDICES] = indices
        return result


def balanced_lesion_indices(lesion: np.ndarray) -> np.ndarray:
    """Flat indices of ``lesion``'s voxels, :data:`LESION_INDEX_COUNT` per 26-connected lesion (empty without one)."""
    labels, count = ndimage.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(1, count + 2))
    per_lesion = [order[start:stop] for start, stop in zip(starts[:-1], starts[1:])]
    return np.concatenate([_evenly(voxels, LESION_INDEX_COUNT) for voxels in per_lesion]
                          or [np.zeros(0, dtype=np.int32)]).astype(np.int32)


def _evenly(voxels: np.ndarray, count: int) -> np.ndarray:
    """``count`` entries spread evenly over ``voxels``: each repeated alike when there are fewer, a subset otherwise."""
    return voxels[np.arange(count) * len(voxels) // count]


def augmentations(config: AugmentConfig, patch: tuple[int, int, int]) -> list:
    """Spatial and intensity augmentations covering those of the study, plus flips and rotations; those whose
    probability is 0 are left out, since some of MONAI's still work when they do nothing (an elastic
    deformation that is not drawn resamples the patch on an identity grid: 40 % of a patch's time on the CPU)."""
    keys = [IMAGE, LABEL]
    angle = math.radians(config.rotate_range_deg)
    in_plane_only = patch[0] == patch[1]
    spatial = [
        RandFlipd(keys=keys, prob=config.flip_prob, spatial_axis=0),
        RandFlipd(keys=keys, prob=config.flip_prob, spatial_axis=1),
        RandFlipd(keys=keys, prob=config.flip_prob, spatial_axis=2),
    ]
    if in_plane_only:
        spatial.append(RandRotate90d(keys=keys, prob=config.rotate90_prob, spatial_axes=(0, 1)))
    spatial += [
        RandAffined(
            keys=keys,
            prob=config.affine_prob,
            rotate_range=(0.0, 0.0, angle),
            scale_range=(config.scale_range,) * 3,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        Rand3DElasticd(
            keys=keys,
            prob=config.elastic_prob,
            sigma_range=(5, 8),
            magnitude_range=(50, 150),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
    ]
    intensity = [
        RandSimulateLowResolutiond(keys=IMAGE, prob=config.lowres_prob, zoom_range=(0.5, 1.0)),
        RandGaussianSmoothd(keys=IMAGE, prob=config.blur_prob, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.25, 0.5)),
        RandGaussianNoised(keys=IMAGE, prob=config.noise_prob, std=config.noise_std),
        RandAdjustContrastd(keys=IMAGE, prob=config.gamma_prob, gamma=(0.7, 1.5)),
        RandScaleIntensityd(keys=IMAGE, prob=config.intensity_prob, factors=0.1),
        RandShiftIntensityd(keys=IMAGE, prob=config.intensity_prob, offsets=0.1),
    ]
    return [transform for transform in spatial + intensity if transform.prob > 0.0]


def invert_to_native(prediction: torch.Tensor, network_input: MetaTensor, transforms: Compose) -> torch.Tensor:
    """Undo crop and resampling of ``transforms`` on a (C, X, Y, Z) prediction.

    The prediction borrows the input's record of applied operations, so MONAI replays their
    inverses: pad back to the uncropped box, then resample to the native grid.
    """
    tracked = MetaTensor(
        prediction.float().cpu(),
        meta=network_input.meta,
        applied_operations=list(network_input.applied_operations),
    )
    restored = transforms.inverse({IMAGE: tracked})[IMAGE]
    return restored.as_tensor()
