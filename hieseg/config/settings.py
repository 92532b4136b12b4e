"""Every tunable of the project in one place, each checked where it is built.

Training writes an :class:`ExperimentConfig` as ``config.json`` beside the weights, and
inference rebuilds the exact same preprocessing, network and post-processing from it, so
nothing that training chose is hard-coded elsewhere.

Every section validates itself when it is constructed (also by ``dataclasses.replace``):
the type of each value from its annotation (whole numbers, finite numbers, true/false, text,
lists of a given length), then the range or choices declared beside the field with
:func:`~hieseg.config.validation.setting`, then the rules that tie fields together. Defaults, ``config.json``, the
flags and ``--set`` all pass through it, so a bad value fails as :class:`ConfigError`,
naming the setting, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hieseg.config.validation import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    ODD,
    OPEN_UNIT,
    POSITIVE,
    PROBABILITY,
    Rule,
    Section,
    between,
    check_nesting,
    one_of,
    per_axis,
    setting,
    shown,
)
from hieseg.errors import ConfigError

CONFIG_FILENAME = "config.json"
CONFIG_FORMAT_VERSION = 4
MAX_CONFIG_DEPTH = 8
"""Most levels of nesting a configuration may have: sections (1), settings (2), lists of lists such as the
DynUNet's per-level strides (3-4), with room to spare. Deeper data is refused before anything walks it."""
"""2: the network is chosen by ``network.name`` and the U-Net's settings moved to section ``unet``.
3: ``preprocess.normalization`` says where intensities are normalised (``native`` from version 3 on).
4: ``preprocess.zadc_normalization`` says whether Z_ADC is z-scored like the ADC or only centred.
Older files are migrated when read, keeping what their weights were trained with."""
NORMALIZATIONS: tuple[str, ...] = ("native", "network_grid")
"""Where each channel is z-scored over the brain: ``native``, on the acquired grid before resampling (as
nnU-Net does); ``network_grid``, after resampling, over resampled ADC > 0 (format 1 and 2 weights)."""
ZADC_NORMALIZATIONS: tuple[str, ...] = ("z_score", "centred")
"""How the Z_ADC channel is normalised over the brain: ``z_score``, like the ADC (format 1 to 3 weights);
``centred``, minus the brain's median only, keeping the normative model's units."""
LESION_SAMPLINGS: tuple[str, ...] = ("voxel", "lesion")
"""How a lesion patch's centre is drawn: ``voxel``, any lesion voxel alike, so a case's large lesions take nearly
every patch; ``lesion``, a lesion (26-connected, on the network grid) first, each alike, then a voxel of it. The
recipe keeps ``voxel``: ``lesion`` found more lesions on family-a-train but marked more false ones and lost Dice
(docs/quality.md)."""
NETWORK_NAMES: tuple[str, ...] = ("unet", "dynunet", "segresnet", "swinunetr")
"""The networks ``network.name`` chooses among (built by ``hieseg.model.network``), each with its own section."""
LOSS_NAMES: tuple[str, ...] = (
    "dice",
    "dicefocal",
    "tversky",
    "hausdorffdt",
    "dicefocal_hausdorffdt",
    "tversky_hausdorffdt",
)
"""The study's six losses, in its order (built by ``hieseg.model.losses``)."""

@dataclass
class PreprocessConfig(Section):
    """How a case is brought from its native grid to the network's grid."""

    target_spacing: tuple[float, float, float] | None = setting(None, POSITIVE)
    """Voxel size in mm (x, y, z) that every case is resampled to. None: derived from the
    training data when training starts (nnU-Net's rule, see ``hieseg.data.spacing``) and saved
    resolved in config.json, so inference always reads an explicit grid."""
    spacing_percentile: float = setting(50.0, between(0, 100))
    """Which percentile of the training data's spacings an unset ``target_spacing`` takes, per axis (50: the
    median, nnU-Net's rule; see ``hieseg.data.spacing``). Lower keeps the finer acquisitions' resolution:
    the labels of lesions a few voxels across survive the round trip to the network grid and back better,
    at the cost of more voxels per case (patches of the same size then span fewer millimetres)."""
    crop_margin: int = setting(4, NON_NEGATIVE)
    """Voxels kept around the brain's bounding box when cropping to the brain."""
    normalization: str = setting("native", one_of(*NORMALIZATIONS))
    """Where each channel's brain mean and std are measured (see ``NORMALIZATIONS``). On the network grid,
    the brain's edge voxels are blended with the zero background by the resampling, so that share of
    darkened voxels, which grows with thick slices and small brains, shifts the statistics and lightens
    the lesions; measured on the native brain, the statistics are those of the acquired tissue."""
    zadc_normalization: str = setting("z_score", one_of(*ZADC_NORMALIZATIONS))
    """How Z_ADC is normalised (see ``ZADC_NORMALIZATIONS``; the ADC is always z-scored). Z_ADC is already a
    z-score against a normative model, and its std over one brain mostly measures that model's errors and the
    lesion burden: z-scored again, a lesion of the same Z_ADC reads deeper the better the atlas. ``centred``
    keeps the units and removes only a global offset."""


@dataclass
class AugmentConfig(Section):
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
class NetworkConfig(Section):
    """Which network to train (``name``) and what every network shares; each network's own
    settings are in the section of its name (``unet``, ``dynunet``, ...), and only that one is used."""

    name: str = setting("unet", one_of(*NETWORK_NAMES))
    in_channels: int = setting(2, one_of(2))
    """ADC and Z_ADC: the preprocessing always stacks these two."""
    out_channels: int = setting(1, one_of(1))
    """One lesion logit per voxel (sigmoid); the losses and the predictor expect it."""
    output_prior: float = setting(0.01, OPEN_UNIT)
    """Initial lesion probability everywhere: lesions are rare, so training starts near 'no lesion'."""


@dataclass
class UNetConfig(Section):
    """Arguments of ``monai.networks.nets.UNet`` (``network.name`` unet, the default)."""

    channels: tuple[int, ...] = setting((16, 32, 64, 128), AT_LEAST_ONE)
    strides: tuple[int, ...] = setting((2, 2, 2), AT_LEAST_ONE)
    num_res_units: int = setting(2, NON_NEGATIVE)
    norm: str = setting("instance", one_of("instance", "batch"))
    dropout: float = setting(0.1, between(0, 1, open_high=True))

    def check_together(self) -> None:
        if len(self.strides) != len(self.channels) - 1:
            raise ConfigError(
                f"unet.strides: one stride per down-sampling step, so {len(self.channels) - 1} for "
                f"{len(self.channels)} channel levels, got {len(self.strides)}"
            )

    def size_multiple(self) -> tuple[int, int, int]:
        """What every axis of an input patch must be a multiple of: each stride divides it, on every axis."""
        return (math.prod(self.strides),) * 3


@dataclass
class DynUNetConfig(Section):
    """Arguments of ``monai.networks.nets.DynUNet``, nnU-Net's U-Net (``network.name`` dynunet).

    One kernel and one stride (x, y, z) per resolution stage, input stage first and bottleneck
    last. The defaults follow nnU-Net's planning for this data's grid: about 0.9 x 0.9 x 2.8 mm
    (slices 2-6 mm thick, resampled to the median), so z is about 3 times coarser than x and y.
    nnU-Net leaves an axis alone while its spacing is over twice the finest one, hence the first
    stage convolves and the first down-sampling halves in-plane only (kernel 3 x 3 x 1, stride
    2 x 2 x 1); after it the grid is about 1.9 x 1.9 x 2.8 mm, close enough to isotropic that the
    next stages work in 3D. A 96 x 96 x 32 patch ends at 6 x 6 x 4 voxels, above nnU-Net's minimum of 4.
    """

    kernel_size: tuple[tuple[int, int, int], ...] = setting(
        ((3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)), per_axis(ODD)
    )
    strides: tuple[tuple[int, int, int], ...] = setting(
        ((1, 1, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)), per_axis(AT_LEAST_ONE)
    )
    filters: tuple[int, ...] = setting((32, 64, 128, 256, 320), AT_LEAST_ONE)
    """Feature maps per stage: nnU-Net's 32 doubling per stage, capped at 320."""
    norm: str = setting("instance", one_of("instance", "batch"))
    """Instance norm (with affine parameters) as in nnU-Net, or batch norm."""
    dropout: float = setting(0.0, between(0, 1, open_high=True))
    res_block: bool = False
    """Residual convolution blocks; nnU-Net's default plans use plain ones."""
    deep_supervision_heads: int | None = setting(None, NON_NEGATIVE)
    """Lower-resolution outputs trained beside the full-resolution one (``hieseg.model.losses``), 0 for
    none. None: nnU-Net's choice, every decoder output but the coarsest (nnU-Net computes that one
    and gives it weight 0; here it is not built), so len(strides) - 3 heads."""

    def check_together(self) -> None:
        stages = len(self.strides)
        if stages < 3 or len(self.kernel_size) != stages or len(self.filters) != stages:
            raise ConfigError(
                "dynunet.kernel_size, dynunet.strides, dynunet.filters: one of each per stage and at least 3 stages "
                f"(input, down-sampling, bottleneck), got {len(self.kernel_size)}, {stages} and {len(self.filters)}"
            )
        if self.strides[0] != (1, 1, 1):
            raise ConfigError(
                f"dynunet.strides: the input stage must keep the full resolution (1, 1, 1), or the output would be "
                f"smaller than the patch; got {shown(self.strides[0])}"
            )
        most = stages - 2
        if self.deep_supervision_heads is not None and self.deep_supervision_heads > most:
            raise ConfigError(
                f"dynunet.deep_supervision_heads: at most {most} with {stages} stages (one per decoder stage below "
                f"the full resolution), got {self.deep_supervision_heads}"
            )

    def heads(self) -> int:
        """The number of deep-supervision heads built, ``deep_supervision_heads`` resolved."""
        return len(self.strides) - 3 if self.deep_supervision_heads is None else self.deep_supervision_heads

    def size_multiple(self) -> tuple[int, int, int]:
        """The product of the strides on each axis."""
        return tuple(math.prod(stride[axis] for stride in self.strides) for axis in range(3))  # type: ignore[return-value]


@dataclass
class SegResNetConfig(Section):
    """Arguments of ``monai.networks.nets.SegResNet`` (``network.name`` segresnet).

    Its down-sampling is isotropic (stride 2 on every axis per level), so nothing here adapts
    it to thick slices; the defaults are MONAI's except 16 initial filters instead of 8.
    """

    init_filters: int = setting(16, AT_LEAST_ONE)
    blocks_down: tuple[int, ...] = setting((1, 2, 2, 4), AT_LEAST_ONE)
    """Residual blocks per encoder level; each level after the first halves every axis."""
    blocks_up: tuple[int, ...] = setting((1, 1, 1), AT_LEAST_ONE)
    norm: str = setting("group", one_of("group", "instance", "batch"))
    num_groups: int = setting(8, AT_LEAST_ONE)
    """Groups of the group norm (ignored by the others)."""
    dropout: float = setting(0.0, between(0, 1, open_high=True))
    upsample_mode: str = setting("nontrainable", one_of("nontrainable", "deconv", "pixelshuffle"))

    def check_together(self) -> None:
        if len(self.blocks_up) != len(self.blocks_down) - 1:
            raise ConfigError(
                f"segresnet.blocks_up: one per decoder level, so {len(self.blocks_down) - 1} for "
                f"{len(self.blocks_down)} encoder levels, got {len(self.blocks_up)}"
            )
        if self.norm == "group" and self.init_filters % self.num_groups:
            raise ConfigError(
                f"segresnet.num_groups: must divide segresnet.init_filters ({self.init_filters}) for the group norm, "
                f"got {self.num_groups}"
            )

    def size_multiple(self) -> tuple[int, int, int]:
        return (2 ** (len(self.blocks_down) - 1),) * 3


@dataclass
class SwinUNETRConfig(Section):
    """Arguments of ``monai.networks.nets.SwinUNETR`` (``network.name`` swinunetr).

    The patch embedding takes 2 x 2 x 2 voxels and four stages each halve the grid, so every
    axis of a patch must be a multiple of 32. Feature size 24 (about 15 million parameters)
    rather than the published 48 (about 62 million): this data set has under a hundred cases.
    """

    feature_size: int = setting(24, Rule(lambda value: value > 0 and value % 12 == 0, "a positive multiple of 12"))
    depths: tuple[int, int, int, int] = setting((2, 2, 2, 2), AT_LEAST_ONE)
    """Swin blocks in each of the four stages."""
    num_heads: tuple[int, int, int, int] = setting((3, 6, 12, 24), AT_LEAST_ONE)
    """Attention heads in each stage; stage i has feature_size * 2^i features to share among them."""
    window_size: tuple[int, int, int] = setting((7, 7, 7), AT_LEAST_ONE)
    """Attention window (clipped by MONAI to a stage's grid where that is smaller, e.g. thin z)."""
    norm: str = setting("instance", one_of("instance", "batch"))
    drop_rate: float = setting(0.0, between(0, 1))
    attn_drop_rate: float = setting(0.0, between(0, 1))
    dropout_path_rate: float = setting(0.0, between(0, 1))
    use_v2: bool = False
    """SwinUNETR-v2: a residual convolution block before each Swin stage."""
    use_checkpoint: bool = False
    """Gradient checkpointing: less memory, slower steps; the weights are the same."""

    def check_together(self) -> None:
        for stage, heads in enumerate(self.num_heads):
            features = self.feature_size * 2**stage
            if features % heads:
                raise ConfigError(
                    f"swinunetr.num_heads: stage {stage} has {features} features, which {heads} heads cannot share "
                    f"equally; got {shown(self.num_heads)}"
                )

    def size_multiple(self) -> tuple[int, int, int]:
        return (32, 32, 32)


@dataclass
class LossConfig(Section):
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
    ce_weight: float = setting(0.0, NON_NEGATIVE)
    """Weight of a voxel-wise binary cross-entropy added to the loss ``name`` (0: the study's loss alone).
    The region ratios pool the batch, so a lesion counts by its voxels and a small one barely moves them;
    cross-entropy scores every voxel on its own, as nnU-Net's Dice + CE does (its weight 1)."""


@dataclass
class TrainConfig(Section):
    """Optimisation, sampling and validation schedule."""

    patch_size: tuple[int, int, int] = setting((96, 96, 32), AT_LEAST_ONE)
    batch_size: int = setting(2, AT_LEAST_ONE)
    samples_per_case: int = setting(2, AT_LEAST_ONE)
    lesion_fraction: float = setting(0.67, PROBABILITY)
    """Share of patches centred on a lesion voxel (the rest on other brain voxels)."""
    lesion_sampling: str = setting("voxel", one_of(*LESION_SAMPLINGS))
    """Which lesion voxel a lesion patch is centred on (see ``LESION_SAMPLINGS``)."""
    mimic_fraction: float = setting(0.0, PROBABILITY)
    """Share of patches centred on a lesion mimic: a brain voxel whose Z_ADC channel is under ``mimic_zadc`` and
    that lies over ``mimic_distance_mm`` from every lesion voxel (where a threshold reader would mark a lesion
    that is not one: artefacts, atlas errors). Taken from the other brain voxels' share; 0 samples as before."""
    mimic_zadc: float = -2.0
    """Z_ADC channel value under which a brain voxel can be a lesion mimic: the challenge baseline's threshold."""
    mimic_distance_mm: float = setting(10.0, NON_NEGATIVE)
    """A lesion mimic lies farther than this from every lesion voxel, so that its patch is not a lesion's rim."""
    epochs: int = setting(300, AT_LEAST_ONE)
    """The epochs of the run; with ``budget_min``, the most it may take."""
    budget_min: float = setting(0.0, NON_NEGATIVE)
    """Minutes of epochs (their training and validation) the run may take; 0: no limit. After each epoch the
    run plans the epochs done plus the remaining minutes over its mean epoch so far (rounded, at most ``epochs``),
    as nnU-Net's time-budgeted trainers do, and the warm-up and cosine schedule run over that plan, so the
    learning rate reaches zero when the budget does and the last epoch validates. The plan follows the machine's
    speed, so two machines train different numbers of epochs; a resumed run continues the plan it saved."""
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
    networks_per_fold: int = setting(1, AT_LEAST_ONE)
    """Networks trained on each fold's (or the explicit validation list's) training cases; inference averages
    them with the folder's others. Network m (from 0) draws its initialisation, patches and augmentation with
    the seed ``seed + m`` (:func:`~hieseg.training.folder.network_seed`) while the split stays ``seed``'s; with
    ``budget_min``, each takes an equal share of the budget. Tuning scores their mean probability on the
    validation cases they share, as inference forms it."""
    seed: int = setting(42, between(0, 2**32 - 1))
    """Seeds numpy too, whose seeds are 32-bit."""
    num_workers: int | None = setting(None, NON_NEGATIVE)
    """Loader worker processes drawing and augmenting patches; None (``null`` in config.json, the default):
    chosen from the usable cores and the device when the run starts, and logged
    (``hieseg.training.optimization.auto_loader_workers``). A number is used as such: the patches a run
    draws depend on it, so an explicit setting reproduces a run on any machine."""
    cache_cases: bool = True
    """Keep every training case's preprocessed volumes in memory (their size is logged at start)."""
    torch_threads: int = setting(0, NON_NEGATIVE)
    """Intra-op threads of torch while training; 0: the usable cores minus the loader workers
    (at least 1), because threads competing with the workers for cores slow a step many-fold."""

    def check_together(self) -> None:
        if self.lesion_fraction + self.mimic_fraction > 1.0:
            raise ConfigError(f"train.lesion_fraction + train.mimic_fraction must be at most 1, got "
                              f"{self.lesion_fraction:g} + {self.mimic_fraction:g}")
        if self.fold >= self.folds:
            raise ConfigError(f"train.fold: must be in [0, {self.folds - 1}] for {self.folds} folds, got {self.fold}")


@dataclass
class InferenceConfig(Section):
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
    min_total_mm3: float = setting(0.0, NON_NEGATIVE)
    """A mask whose total volume stays under this is emptied: the per-case decision that the image holds no
    lesion (0: off). Applied last, after the small components and the fallback."""
    tta_flips: bool = False
    refine: bool = False
    """Refine the probability with the folder's ``refinement.json`` (local ADC and Z_ADC features) before
    thresholding; tuning switches it on only when it wins on the validation cases."""
    zadc_boundary: float = setting(0.0, between(0, 1, open_high=True))
    """Redraw each lesion's edge where Z_ADC has come this fraction of the way from the surrounding tissue's level
    to the lesion's depth (:mod:`hieseg.inference.boundary`); 0: the network's edge. Applied after the small
    components and the fallback, before the per-case decision."""
    amp: bool = True
    """Mixed precision; only takes effect on CUDA."""

    @property
    def postprocessing(self) -> PostProcessing:
        """The settings that turn the networks' probability into the final mask."""
        return PostProcessing(**{name: getattr(self, name) for name in POSTPROCESSING_KEYS})

    def with_postprocessing(self, postprocessing: PostProcessing) -> InferenceConfig:
        return dataclasses.replace(self, **dataclasses.asdict(postprocessing))


@dataclass(frozen=True)
class PostProcessing:
    """How a probability map becomes the final mask: what tuning chooses together on the validation cases,
    what ``--threshold``, ``--min-component-mm3`` and ``--tta`` override, and what the predictor applies.

    Saved as the ``inference`` section's fields of the same names (see :class:`InferenceConfig`).
    """

    threshold: float
    min_component_mm3: float
    empty_fallback_probability: float
    tta_flips: bool
    refine: bool = False
    min_total_mm3: float = 0.0
    zadc_boundary: float = 0.0


POSTPROCESSING_KEYS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(PostProcessing))
"""The ``inference`` settings that make up :class:`PostProcessing`, which tuning rewrites after training."""


@dataclass
class TuningConfig(Section):
    """Post-processing chosen on the validation cases after training (see :mod:`hieseg.training.tuning`)."""

    enabled: bool = True
    thresholds: tuple[float, ...] = setting((0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), OPEN_UNIT)
    min_component_mm3: tuple[float, ...] = setting((0.0, 10.0, 25.0), NON_NEGATIVE)
    """Candidates of ``inference.min_component_mm3``. None above 25 mm^3: punctate lesions of a few tens of
    mm^3 are a common HIE pattern, so a larger minimum deletes real lesions wholesale, and a validation
    fold has too few lesion-free cases for the specks it removes there to justify that."""
    empty_fallback_probability: tuple[float, ...] = setting((0.0, 0.02, 0.05, 0.1, 0.3), between(0, 1, open_high=True))
    """Candidates of ``inference.empty_fallback_probability``; 0 is 'off'. Low values matter: an empty mask of a
    lesioned case scores the capped MASD, so a faint guess near the peak can beat silence."""
    min_total_mm3: tuple[float, ...] = setting((0.0,), NON_NEGATIVE)
    """Candidates of ``inference.min_total_mm3``, the per-case empty decision; only lesion-free validation cases
    (``lesion_free_share``) can ever choose one above 0. After training, those at or above the smallest lesion
    among the training and validation labels are not tried (:func:`hieseg.training.tuning.below_smallest_lesion`)."""
    zadc_boundary: tuple[float, ...] = setting((0.0,), between(0, 1, open_high=True))
    """Candidates of ``inference.zadc_boundary``; 0 keeps the network's edge. The recipe tries 0 and 0.4
    (docs/quality.md); a source whose labels do not follow the Z_ADC map keeps 0."""
    lesion_free_share: float = setting(0.0, between(0, 1, open_high=True))
    """The share of the tuning mean given to lesion-free copies of the validation cases
    (:mod:`hieseg.data.healing`), one per case, which cost a second prediction each; 0 makes none. A source with
    lesion-free cases has some in its validation too; one without them (family-a-train) shows the tuner what
    its network marks on a lesion-free brain only this way."""
    try_tta: bool = True
    """Also score flip test-time augmentation, which costs five predictions per case."""
    tta_min_dice_gain: float = setting(0.01, NON_NEGATIVE)
    """Flip TTA is switched on only when it wins the ranking and adds at least this mean Dice (above 1: never)."""
    try_refinement: bool = False
    """Also score the second stage of :mod:`hieseg.model.refinement`, cross-fitted on two halves of the
    validation cases; it is kept (fitted on all of them) only when it wins the ranking. Needs at least four
    validation cases; off by default because the demo weights' validation rejected it."""
    refinement_neighbourhood_mm: float = setting(5.0, POSITIVE)
    """Side of the in-plane square whose local means the refinement reads (the first-placed team used 5x5 voxels)."""

    def check_together(self) -> None:
        if self.try_refinement and self.lesion_free_share > 0:
            raise ConfigError("tuning.try_refinement and tuning.lesion_free_share > 0 exclude each other: the "
                              "refinement's cross-fitting is scored on the lesioned validation cases only")


@dataclass
class ProvenanceConfig(Section):
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
    unet: UNetConfig = field(default_factory=UNetConfig)
    dynunet: DynUNetConfig = field(default_factory=DynUNetConfig)
    segresnet: SegResNetConfig = field(default_factory=SegResNetConfig)
    swinunetr: SwinUNETRConfig = field(default_factory=SwinUNETRConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    provenance: ProvenanceConfig | None = None
    """Set in the config.json written by training (``hieseg.model.provenance``); None in older files."""
    format_version: int = CONFIG_FORMAT_VERSION

    def __post_init__(self) -> None:
        """Check what ties sections together: the patch and window sizes the chosen network accepts."""
        multiple = self.network_settings().size_multiple()
        for name, size in (("train.patch_size", self.train.patch_size), ("inference.roi_size", self.inference.roi_size)):
            if any(length % step for length, step in zip(size, multiple)):
                raise ConfigError(
                    f"{name}: network {self.network.name} needs each axis to be a multiple of "
                    f"{' x '.join(str(step) for step in multiple)} (see its section {self.network.name!r}), "
                    f"got {shown(size)}"
                )
            if math.prod(length // step for length, step in zip(size, multiple)) == 1:
                raise ConfigError(
                    f"{name}: network {self.network.name} reduces {shown(size)} to a single voxel at its coarsest "
                    f"resolution, where normalisation has nothing to normalise; make an axis twice as long"
                )

    def network_settings(self) -> UNetConfig | DynUNetConfig | SegResNetConfig | SwinUNETRConfig:
        """The section of the network that ``network.name`` chooses."""
        return getattr(self, self.network.name)

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
            raise ConfigError(f"expected an object of sections, got {shown(data)}")
        check_nesting(data, MAX_CONFIG_DEPTH)
        version = data.get("format_version", CONFIG_FORMAT_VERSION)
        if type(version) is not int or version not in range(1, CONFIG_FORMAT_VERSION + 1):  # not true, not 1.0
            raise ConfigError(f"config format_version {shown(version)} is not supported "
                              f"(expected 1 to {CONFIG_FORMAT_VERSION})")
        if version == 1:
            data = _from_version_1(data)
        if version <= 2:
            data = _from_version_2(data)
        if version <= 3:
            data = _from_version_3(data)
        kwargs: dict[str, Any] = {}
        for name, section_data in data.items():
            if name == "format_version":
                continue
            if name not in _SECTION_TYPES:
                raise ConfigError(f"unknown config section {name!r}")
            kwargs[name] = _build_section(_SECTION_TYPES[name], section_data, name)
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> ExperimentConfig:
        """The configuration of a config.json; a file that is not one is a :class:`ConfigError` naming it."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the configuration, not valid JSON ({exc})") from exc
        except RecursionError as exc:
            raise ConfigError(f"{path}: cannot read the configuration, its JSON is nested too deeply for a "
                              f"configuration (at most {MAX_CONFIG_DEPTH} levels)") from exc
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
                raise ConfigError(f"unknown config key {dotted!r}{_moved_hint(section, [key])}")
            data[section][key] = value
        return ExperimentConfig.from_dict(data)


_SECTION_TYPES: dict[str, type] = {
    "preprocess": PreprocessConfig,
    "augment": AugmentConfig,
    "network": NetworkConfig,
    "unet": UNetConfig,
    "dynunet": DynUNetConfig,
    "segresnet": SegResNetConfig,
    "swinunetr": SwinUNETRConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "inference": InferenceConfig,
    "tuning": TuningConfig,
    "provenance": ProvenanceConfig,
}


def _build_section(section_type: type, data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"section {name!r} must be an object of settings, got {shown(data)}")
    known = {f.name for f in dataclasses.fields(section_type)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in section {name!r}: {', '.join(unknown)}{_moved_hint(name, unknown)}")
    return section_type(**data)


_UNET_KEYS = frozenset(f.name for f in dataclasses.fields(UNetConfig))


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format_version 1 config as version 2: only the U-Net existed, its settings were in ``network``."""
    data = {**data, "format_version": 2}
    if isinstance(data.get("network"), dict):
        network = dict(data["network"])
        data["unet"] = {key: network.pop(key) for key in list(network) if key in _UNET_KEYS}
        data["network"] = {"name": "unet", **network}
    return data


def _from_version_2(data: dict[str, Any]) -> dict[str, Any]:
    """A format_version 2 config as version 3: its weights were trained on intensities normalised on the
    network grid, so they keep that normalisation."""
    return _with_preprocess_default(data, 3, "normalization", "network_grid")


def _from_version_3(data: dict[str, Any]) -> dict[str, Any]:
    """A format_version 3 config as version 4: its weights were trained on a z-scored Z_ADC, so they keep it."""
    return _with_preprocess_default(data, 4, "zadc_normalization", "z_score")


def _with_preprocess_default(data: dict[str, Any], version: int, key: str, value: str) -> dict[str, Any]:
    """``data`` as ``version``, with ``preprocess.key`` set to what older weights were trained with unless the
    file gives it (a ``preprocess`` that is not an object is left for the section check to refuse)."""
    data = {**data, "format_version": version}
    if isinstance(data.get("preprocess"), dict):
        data["preprocess"] = {key: value, **data["preprocess"]}
    elif "preprocess" not in data:
        data["preprocess"] = {key: value}
    return data


def _moved_hint(section: str, keys: list[str]) -> str:
    """Where keys of a version 1 ``network`` section went, for the message refusing them."""
    if section == "network" and keys and set(keys) <= _UNET_KEYS:
        return " (the U-Net's settings are in section 'unet' since format_version 2)"
    return ""
