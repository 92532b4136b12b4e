"""Synthetic BONBID-HIE-like cases: ADC, Z_ADC and lesion label of a neonatal brain.

Real BONBID-HIE data cannot be shipped with the project, so tests, demos, the demo model's
training and benchmarks use volumes drawn by this module. Every case is a pure function of
its seed and its realism profile, and the anatomy, the lesions and the acquisition are drawn
from separate random streams: asking for the same seed with another ``lesion_burden`` gives
the same brain with other lesions, which lets a test compare a lesioned brain with its
healthy twin. Each realism effect has a stream of its own too, so a case of any profile has
the grid and draws the cerebrum of its "basic" twin of the same seed (before effects that
move, cut or extend it).

Profiles
--------
``make_case(..., profile=...)`` and ``write_release(..., profile=...)`` default to
``"basic"``, the easy cases below, reproduced bit for bit; the command line defaults to
``"randomised"``, the training profile. The effects, their per-case probabilities and ranges
live in :mod:`hieseg.synthesis.effects` (one :class:`~hieseg.synthesis.effects.RealismProfile`
per profile; ``RANDOMISED.only("faint")`` etc. switch on one effect alone):

==============  ==========================================  ==============================================
effect          randomised (training)                       shifted (out-of-distribution test)
==============  ==========================================  ==============================================
lesion-free     p 0.10: empty label                         p 0.15
normative       p 1: atlas misregistered by a 0.5-2 mm      p 1: shift 2.25-2.75 mm, warp 1.1-1.4 mm,
                shift + 0.3-1 mm smooth warp, regional      bias 0.85-1.0 z, offset +/-0.55-0.65 z,
                bias 0.3-0.8 z (~40 mm), offset +/-0-0.5    std x 0.72-0.78 or 1.28-1.38
                z, std x 0.8-1.25
hindbrain       p 0.85: cerebellum x 0.9-1.1 of 25x18x13    p 1: cerebellum x 0.75-0.85 or 1.15-1.25,
                mm semi-axes, ADC 1100-1300, folia          brainstem radius 5.5-6.5 or 10.5-11.5 mm
                texture 5-12 %; brainstem radius 7-10 mm,
                ADC 1000-1200
myelination     p 0.7: internal capsule (+ corticospinal    same
                band p 0.5) ADC 900-1150, atlas set so it
                reads z -1.25..-3 before blur (~-1..-2.5)
faint lesions   p 0.3: every blob's ADC set to read a       p 0.4
                target z in -3..-1.5
susceptibility  p 0.5: 1-3 blobs of 5-20 mm, ADC 300-800,   same
                at the inferior frontal/temporal surface
blood products  never                                       p 0.5: 1-6 blobs of 2-6 mm, ADC 200-600,
                                                            anywhere in the parenchyma
site            p 1: ADC scale 0.93-1.07, Rician noise      p 1: scale 0.89-0.92 or 1.08-1.11, noise
                3-9 %, in-plane blur sigma 0.5-0.9 mm       9.5-12 %, blur sigma 1.0-1.5 mm
leftover rim    p 0.2: 1-4 mm shell over a 30-70 degree     same
                sector outside the brain, ADC 600-2000
cut brain       p 0.1: 5-15 mm cap off the top or front     same
motion          p 0.3: slices scaled 1 +/- 3-8 %, odd       same
                slices shifted in-plane by 0.5-2 mm
ghosting        never                                       p 0.4: N/2 ghost, 3-10 % of the head signal
small lesions   p 0.25: burden log-uniform 0.002-0.2 %      never (the profile as first scored)
                in 2-10 blobs (punctate, multifocal)
mild lesions    p 0.4: each blob with p 0.6 at 0.55-0.8 x   never
                its tissue's normal ADC (core x0.9, rim
                x1.1) instead of 450-850
accurate atlas  p 0.3: the normative errors drawn above     never
                times 0-0.25 (a near-exact atlas)
==============  ==========================================  ==============================================

A fourth profile, ``"accurate-atlas"`` (testing only), is "randomised" without the accurate-atlas effect
and with a near-exact normative model (misregistration 0-0.2 mm, warp 0-0.1 mm, bias 0-0.1 z, offset
0-0.05 z, std x 0.95-1.05): the same cases as ``RANDOMISED.without("accurate_atlas")`` but for Z_ADC.

What is modelled / what is not
------------------------------
Modelled in every profile (the "basic" case):

* Grids like the release's: in-plane 128..256 voxels (x == y), 16..64 slices, in-plane
  spacing giving a 180-240 mm field of view, slices 2-6 mm thick (thicker when fewer, so the
  z extent is 96-130 mm), a small random origin and an identity or slightly oblique
  (orthonormal) direction.
* A skull-stripped neonatal brain: a smoothly deformed, posteriorly widened ellipsoid
  (100-120 mm antero-posterior, 80-100 mm wide, 70-90 mm tall) tilted by a few degrees in
  the grid, shrunk to fit when a caller's field of view is too small. Tissue classes:
  an outer CSF rim with sulcal variation, an interhemispheric fissure, lateral ventricles,
  a gyrated cortical band, deep grey matter (lentiform nuclei, caudate heads, thalami) and
  white matter with the high ADC of the unmyelinated neonatal brain (see ``TISSUES``).
* HIE lesions: 1-6 irregular blobs of restricted diffusion (ADC 450-850 x 10^-6 mm^2/s,
  darkest at the core) placed in white matter, deep grey matter or cortex after a
  watershed, basal-ganglia/thalamus or mixed pattern, never in CSF nor outside the brain.
  Their total volume hits the requested fraction of brain volume to the voxel. Default
  burdens follow the release's skew: 60 % log-uniform in [0.05 %, 1 %], 40 % log-uniform in
  [1 %, 30 %]. In "basic", default draws always have a lesion and a lesion-free case needs an
  explicit ``lesion_burden=0``.
* Acquisition: partial-volume blur (Gaussian of about a voxel's width per axis, hence much
  wider in mm along z), a mild multiplicative bias field and Rician noise whose sigma is
  3-7 % of the local ADC (high-ADC CSF comes from low DWI signal, so it is noisier). ADC is
  float32 in 10^-6 mm^2/s, >= 0 inside the brain and exactly 0 outside; the brain is ADC > 0.
* Z_ADC: (ADC - normative mean) / normative std, blurred like the acquisition and by the
  2 mm kernel; the z map is then smoothed by a 2 mm FWHM Gaussian within the brain and
  clipped to [-10, 10], as the release's ``ADC_smooth2mm_clipped10`` maps, and is 0 outside
  the brain. In "basic" the normative maps are the same brain's lesion-free tissue means and
  per-tissue std: lesions read about -3 to -8, white and deep grey matter about 0 +/- 0.7,
  the thin cortex and CSF rim about -1 and +0.6 (the normative map is smoother than the
  image), and nothing else is dark.

Added by the "randomised" and "shifted" profiles (table above):

* An imperfect normative model: the atlas's tissue map is misregistered (z errors of about 1
  on average at tissue edges, up to +/-5 where CSF meets cortex; the atlas std is widened
  there by a 0.5 mm registration spread),
  with a smooth regional bias, a global offset and a std scale error; it knows neither the
  site's ADC scale nor the cerebellar folia, and only partly the myelinated internal capsule.
* Cerebellum (with CSF envelope and folia texture) and brainstem (tube from below the
  thalami, wider at the pons, clipped where the field of view ends), never lesioned.
* Low-ADC confounders that are never labelled: skull-base susceptibility blobs and, in
  "shifted" only, blood products; a lower-ADC internal capsule and corticospinal band (a
  lesion blob may spread into the capsule, never start there).
* Faint, pseudo-normalised lesions (z -1.5..-3); lesion-free cases with an empty label.
* In "randomised" only: small punctate, multifocal lesions (down to a few voxels) and mildly restricted
  blobs at a fraction of their tissue's normal ADC, as real lesions vary in size and degree; and, in
  some cases, a nearly exact normative model, as atlases vary in quality.
* Site: ADC scale, noise level and in-plane resolution.
* Imperfect skull stripping: a leftover shell of non-brain tissue (``TissueClass.NON_BRAIN``;
  ADC > 0 so it is brain for the pipeline, and its Z is strongly negative because the atlas
  reads CSF there), or a cap cut off (ADC, Z and label 0 there).
* Motion between interleaved slices (their anatomy, mask and label move, the atlas does not;
  per-slice intensity) and, in "shifted" only, an antero-posterior N/2 ghost of the head's
  signal (it reaches the brain only where the head is longer than half the field of view:
  the frontal and occipital poles, in some cases not at all).

Not modelled: the skull, scalp and face (except as the leftover rim and the ghost's source),
temporal-lobe shape, the fourth ventricle and cisterns, eddy-current distortion, susceptibility
distortion (only its signal loss), intensity differences between the b0 and DWI ghosts, and
the real release's exact scanner and site mix. The lesion shapes are plausible, not traced
from patients, and their ADC ignores the scan's age: a model trained only on these cases
learns the contrast, not real HIE morphology.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from hieseg.io.images import Geometry, from_xyz_array, write_image_atomic
from hieseg.io.layout import (
    CONTAINER_ADC_DIR,
    CONTAINER_ZADC_DIR,
    adc_path,
    label_path,
    zadc_path,
)
from hieseg.synthesis import effects as fx
from hieseg.synthesis.effects import RealismProfile


class TissueClass(IntEnum):
    """Codes of the tissue map returned in :attr:`SyntheticCase.tissue`."""

    BACKGROUND = 0
    CSF = 1
    CORTEX = 2
    WHITE_MATTER = 3
    DEEP_GREY = 4
    CEREBELLUM = 5  # hindbrain effect
    BRAINSTEM = 6  # hindbrain effect
    INTERNAL_CAPSULE = 7  # myelination effect: posterior limb and corticospinal band
    NON_BRAIN = 8  # leftover rim of an imperfect skull strip: not brain, but ADC > 0


@dataclass(frozen=True)
class TissueParams:
    """Per-case range of a tissue's mean ADC and its normative std, in 10^-6 mm^2/s."""

    adc_range: tuple[float, float]
    normative_std: float


TISSUES: dict[TissueClass, TissueParams] = {
    TissueClass.CSF: TissueParams(adc_range=(2800.0, 3200.0), normative_std=200.0),
    TissueClass.CORTEX: TissueParams(adc_range=(1100.0, 1300.0), normative_std=120.0),
    TissueClass.WHITE_MATTER: TissueParams(adc_range=(1400.0, 1700.0), normative_std=150.0),
    TissueClass.DEEP_GREY: TissueParams(adc_range=(1000.0, 1150.0), normative_std=100.0),
}
"""Neonatal ADC by tissue: unmyelinated white matter is brighter than grey matter."""
EFFECT_TISSUE_STD: dict[TissueClass, float] = {
    TissueClass.CEREBELLUM: fx.NORMATIVE_STD["cerebellum"],
    TissueClass.BRAINSTEM: fx.NORMATIVE_STD["brainstem"],
    TissueClass.INTERNAL_CAPSULE: fx.NORMATIVE_STD["internal_capsule"],
}
"""Normative std of the tissues the realism effects add (their ADC ranges are in the profiles)."""

LESION_TISSUES = (TissueClass.WHITE_MATTER, TissueClass.DEEP_GREY, TissueClass.CORTEX)
LESION_PATTERNS: dict[str, tuple[float, float, float]] = {
    "watershed": (0.6, 0.05, 0.35),
    "basal_ganglia_thalamus": (0.2, 0.7, 0.1),
    "mixed": (0.45, 0.3, 0.25),
}
"""Chance that a blob is centred in each of ``LESION_TISSUES``, by HIE injury pattern."""
LESIONABLE = (*LESION_TISSUES, TissueClass.INTERNAL_CAPSULE)
"""Tissues a lesion may cover (a blob may spread into the internal capsule, not centre there)."""
PARENCHYMA = (*LESIONABLE, TissueClass.CEREBELLUM, TissueClass.BRAINSTEM)
CEREBRAL_SURFACE = (TissueClass.CSF, TissueClass.CORTEX, TissueClass.WHITE_MATTER)
LESION_ADC_RANGE = (450.0, 850.0)
LESION_CORE_FACTOR = 0.85
LESION_RIM_RISE = 0.2
"""A blob's ADC runs from LESION_CORE_FACTOR times its level at the core to +LESION_RIM_RISE at the rim."""
LESION_BLOBS = (1, 6)
LESION_IRREGULARITY = 0.4
"""Amplitude of the noise added to each blob's normalised ellipsoid radius."""
LESION_NOISE_SCALE_MM = 4.0
SMALL_BURDEN_PROBABILITY = 0.6
SMALL_BURDEN_RANGE = (0.0005, 0.01)
LARGE_BURDEN_RANGE = (0.01, 0.30)
MAX_BURDEN = 0.5

IN_PLANE_SIZES = (128, 160, 192, 224, 256)
SLICE_COUNT_RANGE = (16, 64)
FIELD_OF_VIEW_MM = (180.0, 240.0)
Z_EXTENT_MM = (100.0, 130.0)
SLICE_THICKNESS_MM = (2.0, 6.0)
MIN_SIZE = 8
MAX_SIZE = 1024
"""Largest grid axis a case may have: 4 times the release's largest (256 x 256 x 64), a 0.2 mm in-plane grid over
a neonatal head; more is a typo that would fill the memory before anything is written."""
MAX_VOXELS = 2**26
"""Largest grid a case may have (67 million voxels, about 2 GB of float32 volumes while it is drawn): 16 times
the release's largest case (256 x 256 x 64 = 4.2 million)."""
MIN_BRAIN_VOXELS = 500
MIN_BRAIN_SCALE = 0.2
"""Smallest shrink factor applied to fit a brain in a caller's field of view."""
OBLIQUE_PROBABILITY = 0.5
OBLIQUE_MAX_DEG = 4.0
ORIGIN_JITTER_MM = 10.0

BRAIN_SEMI_AXES_MM = ((40.0, 50.0), (50.0, 60.0), (35.0, 45.0))
"""Ranges of the brain's semi-axes: left-right, antero-posterior, infero-superior."""
REFERENCE_SEMI_AXES_MM = (45.0, 55.0, 40.0)
"""The brain in which ``DEEP_STRUCTURES`` etc. are given in mm; they scale with the case's."""
HEAD_TILT_MAX_DEG = (6.0, 10.0, 6.0)
BRAIN_OFFSET_MAX_MM = (4.0, 6.0, 4.0)
DEFORMATION_AMPLITUDE = (0.02, 0.05)
DEFORMATION_CLIP = 2.0
DEFORMATION_SCALE_MM = 25.0
POSTERIOR_WIDENING = (0.0, 0.08)
BOUNDS_SLACK = 1.22
"""Worst-case growth of the brain beyond its ellipsoid from deformation and widening."""
FIT_MARGIN_MM = 2.0
CSF_RIM_DEPTH = (0.02, 0.045)
CORTEX_DEPTH = (0.05, 0.08)
GYRAL_SCALE_MM = 9.0
CORTEX_UNDULATION = 0.015
"""Amplitude of the smooth variation of the cortical band's depth, normalised units."""
SULCUS_DEPTH = (0.1, 0.2)
"""How deep sulci reach into the brain, in normalised radius (about 5-10 mm)."""
SULCUS_HALF_WIDTH = 0.12
SULCUS_LINING = 0.3
"""Sulci are CSF where the gyral noise is within SULCUS_HALF_WIDTH of 0 (sheets that fold
like sulci), lined with cortex SULCUS_LINING further on each side."""
DEEP_STRUCTURES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((19.0, -6.0, -2.0), (6.0, 11.0, 9.0)),  # lentiform nucleus
    ((11.0, -14.0, 8.0), (4.0, 7.0, 6.0)),  # caudate head
    ((9.0, 8.0, 0.0), (8.0, 11.0, 8.0)),  # thalamus
)
"""Right-hemisphere (centre, semi-axes) in reference mm; mirrored to the left."""
VENTRICLE = ((7.0, 0.0, 12.0), (3.5, 22.0, 4.5))
VENTRICLE_SCALE = (0.7, 1.6)
"""Widening of the ventricles' slit (x and z semi-axes) to vary ventricular size."""
DEEP_REGION = (0.62, 0.45, 0.52)
"""Normalised half-extent of the central box holding every deep structure."""
FISSURE_HALF_WIDTH_MM = 0.9
FISSURE_ABOVE_MM = 18.0
FISSURE_POLES_MM = 38.0

PARTIAL_VOLUME_VOXELS = 0.3
"""Sigma of the partial-volume blur per axis, in voxels (a one-voxel box profile has a std of 0.29)."""
IN_PLANE_RESOLUTION_SIGMA_MM = (0.5, 0.9)
"""Sigma of the in-plane blur of the acquisition, interpolated to the reconstructed grid."""
BIAS_AMPLITUDE = (0.02, 0.06)
BIAS_SCALE_MM = 80.0
NOISE_FRACTION = (0.03, 0.07)
ZMAP_FWHM_MM = 2.0
ZMAP_CLIP = 10.0
GAUSSIAN_TRUNCATE = 3.0
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass
class SyntheticCase:
    """One generated case; the three images share one grid."""

    case_id: str
    adc: sitk.Image
    zadc: sitk.Image
    label: sitk.Image
    tissue: np.ndarray | None = None
    """(x, y, z) uint8 map of :class:`TissueClass` codes (lesions keep their tissue's code)."""
    profile: str = "basic"
    """Name of the realism profile the case was drawn with."""
    effects: dict[str, fx.Params] = field(default_factory=dict)
    """The realism effects this case got, each with its drawn parameters (empty for basic)."""


@dataclass(frozen=True)
class _Head:
    """Anatomy of one brain in the grid frame (mm from the grid centre)."""

    semi_axes: np.ndarray
    rotation: np.ndarray
    """Columns: the brain's left-right, antero-posterior and infero-superior axes in the grid."""
    centre: np.ndarray
    widening: float
    deformation: float
    csf_depth: float
    cortex_depth: float
    sulcus_depth: float
    ventricle_scale: float


@dataclass(frozen=True)
class _Crop:
    """The sub-grid around the brain where all the work happens."""

    slices: tuple[slice, slice, slice]
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]
    """Grid-frame coordinate of each voxel of the crop, per axis."""
    spacing: np.ndarray


@dataclass(frozen=True)
class _Brain:
    """Tissue map and brain mask of the crop."""

    tissue: np.ndarray
    mask: np.ndarray
    radius: np.ndarray | None = None
    """The cerebrum's deformed normalised radius (< 1 inside), for effects at its surface."""


@dataclass(frozen=True)
class _Lesions:
    """Lesion mask of the crop, the lesions' ADC, and each lesion voxel's blob and depth in it."""

    mask: np.ndarray
    adc: np.ndarray
    blob: np.ndarray
    relative: np.ndarray
    """0 at a blob's core .. 1 at its rim."""


@dataclass(frozen=True)
class _Normative:
    """Normative mean and std maps (before blur) and the normative model's errors."""

    mean: np.ndarray
    std: np.ndarray
    z_bias: np.ndarray | None = None
    std_scale: float = 1.0
    registration_sd_mm: float = 0.0


def draw_lesion_burden(rng: np.random.Generator) -> float:
    """A lesion fraction of brain volume from the release-like skewed mixture (never 0)."""
    low, high = SMALL_BURDEN_RANGE if rng.random() < SMALL_BURDEN_PROBABILITY else LARGE_BURDEN_RANGE
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a release: independent of how many cases are written."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def release_case_id(index: int) -> str:
    """Case id of the ``index``-th (0-based) synthetic release case, e.g. ``SYNTH_001-VISIT_01``."""
    return f"SYNTH_{index + 1:03d}-VISIT_01"


def make_case(
    case_id: str,
    seed: int,
    size: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    lesion_burden: float | None = None,
    profile: str | RealismProfile = "basic",
) -> SyntheticCase:
    """Generate one case, deterministically from ``seed`` and ``profile``.

    ``size`` is (x, y, z) voxels and ``spacing`` mm; each is drawn from release-like choices
    when None (a given size gets a spacing matching a realistic field of view).
    ``lesion_burden`` is the lesion fraction of brain volume, 0 for a lesion-free case, drawn
    by :func:`draw_lesion_burden` when None (an explicit burden overrides the lesion-free effect).
    ``profile`` picks the realism effects (:mod:`hieseg.synthesis.effects`): ``"basic"`` (none:
    the easy cases), ``"randomised"`` (training), ``"shifted"`` (out-of-distribution test) or a
    :class:`~hieseg.synthesis.effects.RealismProfile`. The effects draw from their own random
    streams, so a case has the grid, and draws the cerebrum, of its basic twin of the same seed.
    """
    _check_request(size, spacing, lesion_burden)
    realism = fx.resolve_profile(profile)
    streams = np.random.SeedSequence(seed).spawn(fx.BASIC_STREAMS + len(fx.EFFECTS))
    geometry_rng, anatomy_rng, lesion_rng, acquisition_rng = (
        np.random.default_rng(child) for child in streams[: fx.BASIC_STREAMS]
    )
    active = fx.switch_on(realism, streams[fx.BASIC_STREAMS :])
    if lesion_burden is not None:  # an explicit burden overrides the effects that choose one
        active.pop("lesion_free", None)
        active.pop("small_lesions", None)
    geometry = _draw_geometry(geometry_rng, size, spacing)
    head = _draw_head(anatomy_rng, geometry)
    crop = _crop_around(head, geometry)
    brain = _draw_brain(anatomy_rng, head, crop)
    n_brain = int(brain.mask.sum())
    if n_brain < MIN_BRAIN_VOXELS:
        raise ValueError(
            f"size {geometry.size} with spacing {tuple(round(s, 3) for s in geometry.spacing)} mm holds only "
            f"{n_brain} brain voxels (need {MIN_BRAIN_VOXELS}); use a larger grid or coarser spacing"
        )
    crop, brain, coordinates = _anatomy_effects(active, head, geometry, crop, brain)
    n_brain = int(brain.mask.sum())
    burden = draw_lesion_burden(lesion_rng) if lesion_burden is None else lesion_burden
    blobs = None
    if "small_lesions" in active:
        burden, blobs = float(active["small_lesions"].params["burden"]), int(active["small_lesions"].params["blobs"])
    if "lesion_free" in active:
        burden = 0.0
    tissue_means = _draw_tissue_means(anatomy_rng)
    _add_effect_tissue_means(active, tissue_means)
    lesions = _draw_lesions(lesion_rng, brain, crop, burden, n_brain, blobs)
    normal = tissue_means[brain.tissue]
    normative = _normative_model(active, brain, normal, tissue_means, crop)
    clean = normal.copy()
    clean[lesions.mask] = _lesion_adc(active, lesions, normal, brain)
    lesion = lesions.mask
    if active:
        clean, brain, lesion = _tissue_effects(active, head, crop, brain, clean, lesion, coordinates)
    site = active.get("site")
    blur = _acquisition_sigma(acquisition_rng, geometry, site.params["resolution_sigma_mm"] if site else None)
    if site:
        clean = clean * np.float32(site.params["adc_scale"])
    adc = _acquire(acquisition_rng, clean, brain.mask, crop, blur, site.params["noise_fraction"] if site else None)
    if active:
        adc = _acquisition_effects(active, adc, head, brain, crop, geometry)
    zadc = _z_map(adc, normative, brain.mask, blur, np.asarray(geometry.spacing))
    case = _assemble(case_id, geometry, crop, adc, zadc, lesion, brain.tissue)
    case.profile = realism.name
    case.effects = {name: effect.params for name, effect in active.items()}
    return case


def write_release(
    root: Path,
    n_cases: int,
    seed: int = 0,
    sizes: tuple[int, int, int] | Sequence[tuple[int, int, int]] | None = None,
    *,
    progress: bool = False,
    profile: str | RealismProfile = "basic",
) -> list[str]:
    """Write ``n_cases`` cases in the public release layout under ``root`` and return their ids.

    ``sizes`` is one (x, y, z) for every case, one per case, or None for drawn sizes.
    Case ``i`` is ``make_case(release_case_id(i), case_seed(seed, i), ..., profile=profile)``,
    so it is the same whatever ``n_cases`` is.
    """
    realism = fx.resolve_profile(profile)
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    per_case = _sizes_per_case(sizes, n_cases)
    root = Path(root)
    ids = []
    for index in tqdm(range(n_cases), desc="synthetic cases", unit="case", disable=not progress):
        case = make_case(release_case_id(index), case_seed(seed, index), size=per_case[index], profile=realism)
        write_image_atomic(case.adc, adc_path(root, case.case_id))
        write_image_atomic(case.zadc, zadc_path(root, case.case_id))
        write_image_atomic(case.label, label_path(root, case.case_id))
        ids.append(case.case_id)
    return ids


def write_container_case(input_root: Path, case: SyntheticCase, uuid: str) -> tuple[Path, Path]:
    """Write a case's ADC and Z_ADC as the grand-challenge container's inputs; return both paths."""
    check_uuid(uuid)
    adc_file = Path(input_root) / CONTAINER_ADC_DIR / f"{uuid}.mha"
    zadc_file = Path(input_root) / CONTAINER_ZADC_DIR / f"{uuid}.mha"
    write_image_atomic(case.adc, adc_file)
    write_image_atomic(case.zadc, zadc_file)
    return adc_file, zadc_file


def size_problem(size: Sequence[int]) -> str:
    """Why a grid ``size`` is too large to draw (over ``MAX_SIZE`` on an axis or ``MAX_VOXELS`` in all), or ''."""
    if max(size) > MAX_SIZE:
        return f"each axis must be at most {MAX_SIZE} voxels (the release's largest grid is 256 x 256 x 64)"
    if math.prod(size) > MAX_VOXELS:
        return (f"{math.prod(size):,} voxels, over the {MAX_VOXELS:,} accepted (the release's largest grid is "
                "256 x 256 x 64)")
    return ""


def _check_request(
    size: tuple[int, int, int] | None,
    spacing: tuple[float, float, float] | None,
    lesion_burden: float | None,
) -> None:
    """Reject sizes, spacings and burdens the generator cannot honour, naming the value."""
    if size is not None:
        if len(size) != 3 or any(int(n) != n or n < MIN_SIZE for n in size):
            raise ValueError(f"size must be 3 integers >= {MIN_SIZE} (x, y, z), got {tuple(size)}")
        if size_problem(size):
            raise ValueError(f"size {tuple(size)}: {size_problem(size)}")
    if spacing is not None:
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be 3 positive finite mm values (x, y, z), got {tuple(spacing)}")
    if lesion_burden is not None and not 0.0 <= lesion_burden <= MAX_BURDEN:
        raise ValueError(f"lesion_burden must be in [0, {MAX_BURDEN}], got {lesion_burden}")


def check_uuid(uuid: str) -> None:
    if not uuid or uuid in {".", ".."} or any(c in uuid for c in "/\\\0"):
        raise ValueError(f"invalid case uuid {uuid!r}: must be a non-empty file name without separators")


def _sizes_per_case(
    sizes: tuple[int, int, int] | Sequence[tuple[int, int, int]] | None, n_cases: int
) -> list[tuple[int, int, int] | None]:
    """Expand write_release's ``sizes`` argument to one entry per case."""
    if sizes is None:
        return [None] * n_cases
    if len(sizes) == 3 and all(isinstance(n, (int, np.integer)) for n in sizes):
        return [tuple(int(n) for n in sizes)] * n_cases
    if len(sizes) != n_cases:
        raise ValueError(f"sizes has {len(sizes)} entries for {n_cases} cases")
    return [tuple(int(n) for n in size) for size in sizes]


def _draw_geometry(
    rng: np.random.Generator,
    size: tuple[int, int, int] | None,
    spacing: tuple[float, float, float] | None,
) -> Geometry:
    """Grid of a case: release-like size, spacing from a realistic field of view, near-axial direction."""
    if size is None:
        in_plane = int(rng.choice(IN_PLANE_SIZES))
        size = (in_plane, in_plane, int(rng.integers(SLICE_COUNT_RANGE[0], SLICE_COUNT_RANGE[1] + 1)))
    size = tuple(int(n) for n in size)
    fov = rng.uniform(*FIELD_OF_VIEW_MM)
    z_extent = rng.uniform(*Z_EXTENT_MM)
    if spacing is None:
        thickness = float(np.clip(z_extent / size[2], *SLICE_THICKNESS_MM))
        spacing = (fov / size[0], fov / size[1], thickness)
    spacing = tuple(float(s) for s in spacing)
    direction = np.eye(3)
    if rng.random() < OBLIQUE_PROBABILITY:
        direction = _rotation(np.radians(rng.uniform(-OBLIQUE_MAX_DEG, OBLIQUE_MAX_DEG, size=3)))
    half = (np.asarray(size) - 1) * np.asarray(spacing) / 2.0
    origin = -direction @ half + rng.uniform(-ORIGIN_JITTER_MM, ORIGIN_JITTER_MM, size=3)
    return Geometry(
        size=size,
        spacing=spacing,
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Orthonormal rotation matrix from (x, y, z) Euler angles in radians."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    around_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    around_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    around_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return around_z @ around_y @ around_x


def _draw_head(rng: np.random.Generator, geometry: Geometry) -> _Head:
    """Size, pose and layer depths of the brain, shrunk if the field of view cannot hold it."""
    semi_axes = np.array([rng.uniform(*bounds) for bounds in BRAIN_SEMI_AXES_MM])
    rotation = _rotation(np.radians([rng.uniform(-m, m) for m in HEAD_TILT_MAX_DEG]))
    centre = np.array([rng.uniform(-m, m) for m in BRAIN_OFFSET_MAX_MM])
    half_fov = np.asarray(geometry.size) * np.asarray(geometry.spacing) / 2.0
    centre = np.clip(centre, -half_fov / 4.0, half_fov / 4.0)
    reach = _reach(semi_axes, rotation)
    room = np.maximum(half_fov - np.abs(centre) - FIT_MARGIN_MM, 0.0)
    shrink = min(1.0, float(np.min(room / reach)))
    if shrink < MIN_BRAIN_SCALE:
        raise ValueError(
            f"a field of view of {tuple(round(float(v), 1) for v in 2 * half_fov)} mm cannot hold a neonatal brain; "
            "use a larger grid or coarser spacing"
        )
    semi_axes = semi_axes * shrink
    return _Head(
        semi_axes=semi_axes,
        rotation=rotation,
        centre=centre,
        widening=rng.uniform(*POSTERIOR_WIDENING),
        deformation=rng.uniform(*DEFORMATION_AMPLITUDE),
        csf_depth=rng.uniform(*CSF_RIM_DEPTH),
        cortex_depth=rng.uniform(*CORTEX_DEPTH),
        sulcus_depth=rng.uniform(*SULCUS_DEPTH),
        ventricle_scale=rng.uniform(*VENTRICLE_SCALE),
    )


def _reach(semi_axes: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Largest distance from its centre, per grid axis, that the deformed brain can reach."""
    return np.sqrt((rotation**2) @ (semi_axes**2)) * BOUNDS_SLACK


def _grid_axes_mm(geometry: Geometry) -> tuple[np.ndarray, ...]:
    """Per axis, each voxel's coordinate in mm from the grid centre (the grid frame)."""
    return tuple(
        ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(geometry.size, geometry.spacing)
    )


def _crop_around(head: _Head, geometry: Geometry) -> _Crop:
    """The voxels the brain can reach, plus a margin for the blurs."""
    axes = _grid_axes_mm(geometry)
    reach = _reach(head.semi_axes, head.rotation)
    slices = []
    for axis, spacing, centre, extent in zip(axes, geometry.spacing, head.centre, reach):
        margin = 3 * spacing
        inside = np.flatnonzero(np.abs(axis - centre) <= extent + margin)
        slices.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return _Crop(
        slices=tuple(slices),
        axes_mm=tuple(axis[s] for axis, s in zip(axes, slices)),
        spacing=np.asarray(geometry.spacing),
    )


def _smooth_noise(rng: np.random.Generator, crop: _Crop, scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-std random field with features of about ``scale_mm`` on the crop
    (see :func:`hieseg.synthesis.effects.smooth_noise`)."""
    return fx.smooth_noise(rng, crop.axes_mm, scale_mm)


def _normalised_coordinates(head: _Head, crop: _Crop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain-frame coordinates of the crop's voxels in units of the brain's semi-axes."""
    offsets = [axis - c for axis, c in zip(crop.axes_mm, head.centre)]
    to_brain = (head.rotation.T / head.semi_axes[:, None]).astype(np.float32)
    coordinates = []
    for row in to_brain:
        plane = (row[0] * offsets[0])[:, None] + (row[1] * offsets[1])[None, :]
        coordinates.append(plane[:, :, None] + (row[2] * offsets[2])[None, None, :])
    return tuple(coordinates)


def _draw_brain(rng: np.random.Generator, head: _Head, crop: _Crop) -> _Brain:
    """Brain mask and tissue classes on the crop."""
    u, v, w = _normalised_coordinates(head, crop)
    deformation = np.clip(_smooth_noise(rng, crop, DEFORMATION_SCALE_MM), -DEFORMATION_CLIP, DEFORMATION_CLIP)
    widened_u = u / (1.0 + head.widening * v)
    radius = np.sqrt(widened_u**2 + v**2 + w**2) * (1.0 + head.deformation * deformation)
    mask = radius < 1.0
    depth = 1.0 - radius
    gyri = _smooth_noise(rng, crop, GYRAL_SCALE_MM)
    sulcus_distance = np.abs(gyri)
    in_sulcal_depth = depth < head.sulcus_depth
    outer_cortex = depth < head.csf_depth + head.cortex_depth + CORTEX_UNDULATION * gyri
    sulcal_cortex = (sulcus_distance < SULCUS_HALF_WIDTH + SULCUS_LINING) & (
        depth < head.sulcus_depth + head.cortex_depth
    )
    tissue = np.where(mask, np.uint8(TissueClass.WHITE_MATTER), np.uint8(TissueClass.BACKGROUND))
    tissue[mask & (outer_cortex | sulcal_cortex)] = TissueClass.CORTEX
    sulcus = in_sulcal_depth & (sulcus_distance < SULCUS_HALF_WIDTH)
    tissue[mask & ((depth < head.csf_depth) | sulcus)] = TissueClass.CSF
    _draw_deep_structures(head, crop, tissue, mask, (u, v, w))
    reference = np.asarray(REFERENCE_SEMI_AXES_MM)
    fissure_u = FISSURE_HALF_WIDTH_MM / head.semi_axes[0]
    midline = np.abs(u + 0.5 * head.deformation * deformation) < fissure_u
    above = (w > FISSURE_ABOVE_MM / reference[2]) | (np.abs(v) > FISSURE_POLES_MM / reference[1])
    tissue[mask & midline & above] = TissueClass.CSF
    return _Brain(tissue=tissue, mask=mask, radius=radius)


def _draw_deep_structures(
    head: _Head,
    crop: _Crop,
    tissue: np.ndarray,
    mask: np.ndarray,
    coordinates: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Paint deep grey nuclei, then the lateral ventricles over them, in the central box only."""
    box = _central_box(head, crop)
    u, v, w = (c[box] for c in coordinates)
    sub_tissue, sub_mask = tissue[box], mask[box]
    reference = np.asarray(REFERENCE_SEMI_AXES_MM)
    for centre, semi in DEEP_STRUCTURES:
        for side in (1.0, -1.0):
            inside = _in_ellipsoid(u, v, w, np.array(centre) * (side, 1, 1) / reference, np.array(semi) / reference)
            sub_tissue[inside & sub_mask] = TissueClass.DEEP_GREY
    centre, semi = VENTRICLE
    semi = np.array(semi) * (head.ventricle_scale, 1.0, head.ventricle_scale)
    for side in (1.0, -1.0):
        inside = _in_ellipsoid(u, v, w, np.array(centre) * (side, 1, 1) / reference, semi / reference)
        sub_tissue[inside & sub_mask] = TissueClass.CSF


def _central_box(head: _Head, crop: _Crop) -> tuple[slice, slice, slice]:
    """Crop-relative slices of the tilted central box that holds the deep structures."""
    corners = np.array(np.meshgrid(*[(-1.0, 1.0)] * 3, indexing="ij")).reshape(3, -1).T
    corners_mm = head.centre + (corners * np.asarray(DEEP_REGION) * head.semi_axes) @ head.rotation.T
    return tuple(
        _index_range(axis, float(lo), float(hi))
        for axis, lo, hi in zip(crop.axes_mm, corners_mm.min(axis=0), corners_mm.max(axis=0))
    )


def _index_range(axis: np.ndarray, low_mm: float, high_mm: float) -> slice:
    """Slice of the voxels of a sorted axis that lie within [low_mm, high_mm], widened by one."""
    start = max(int(np.searchsorted(axis, low_mm)) - 1, 0)
    stop = min(int(np.searchsorted(axis, high_mm, side="right")) + 1, len(axis))
    return slice(start, max(stop, start))


def _in_ellipsoid(u: np.ndarray, v: np.ndarray, w: np.ndarray, centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    return ((u - centre[0]) / semi[0]) ** 2 + ((v - centre[1]) / semi[1]) ** 2 + ((w - centre[2]) / semi[2]) ** 2 < 1.0


def _draw_tissue_means(rng: np.random.Generator) -> np.ndarray:
    """Look-up table tissue code -> this case's mean ADC; background reads as CSF for the blur."""
    table = np.zeros(len(TissueClass), dtype=np.float32)
    for tissue_class, params in TISSUES.items():
        table[tissue_class] = rng.uniform(*params.adc_range)
    table[TissueClass.BACKGROUND] = table[TissueClass.CSF]
    return table


def _draw_lesions(rng: np.random.Generator, brain: _Brain, crop: _Crop, burden: float, n_brain: int,
                  blobs: int | None = None) -> _Lesions:
    """Lesion mask of the crop holding ``burden`` of the brain's voxels (in ``blobs`` blobs, else a drawn
    number), and the lesions' ADC.

    Each blob is a randomly oriented ellipsoid whose normalised radius is perturbed by
    smooth noise. Every parenchyma voxel gets a score, its lowest perturbed radius over the
    blobs, and the lesion is the ``burden * n_brain`` lowest-scoring voxels: this hits the
    burden exactly while keeping each blob's shape and the blobs' relative sizes.
    """
    lesion = np.zeros(brain.tissue.shape, dtype=bool)
    if burden == 0.0:
        return _no_lesion(lesion)
    n_target = max(1, round(burden * n_brain))
    n_blobs = int(rng.integers(LESION_BLOBS[0], LESION_BLOBS[1] + 1))
    n_blobs = n_blobs if blobs is None else blobs
    pattern = LESION_PATTERNS[str(rng.choice(list(LESION_PATTERNS)))]
    volumes = rng.dirichlet(np.full(n_blobs, 1.5)) * n_target * float(np.prod(crop.spacing))
    roughness = _smooth_noise(rng, crop, LESION_NOISE_SCALE_MM)
    score = np.full(brain.tissue.shape, np.inf, dtype=np.float32)
    blob_of = np.zeros(brain.tissue.shape, dtype=np.int8)
    for blob, volume in enumerate(volumes):
        target_class = LESION_TISSUES[int(rng.choice(len(LESION_TISSUES), p=pattern))]
        centre = _random_voxel(rng, brain.tissue, target_class)
        aspect = np.exp(rng.normal(0.0, 0.3, size=3))
        radii = (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0) * aspect / np.prod(aspect) ** (1.0 / 3.0)
        rotation = _rotation(rng.uniform(-math.pi, math.pi, size=3))
        _score_blob(crop, centre, radii, rotation, roughness, score, blob_of, blob)
    parenchyma = brain.mask & np.isin(brain.tissue, LESIONABLE)
    candidates = score[parenchyma & np.isfinite(score)]
    if candidates.size == 0:
        return _no_lesion(lesion)
    threshold = np.partition(candidates, min(n_target, candidates.size) - 1)[min(n_target, candidates.size) - 1]
    lesion = parenchyma & (score <= threshold)
    levels = rng.uniform(*LESION_ADC_RANGE, size=n_blobs).astype(np.float32)
    relative = np.clip(score[lesion] / max(float(threshold), 1e-6), 0.0, 1.0)
    blob = blob_of[lesion]
    adc = levels[blob] * (LESION_CORE_FACTOR + LESION_RIM_RISE * relative)
    return _Lesions(mask=lesion, adc=adc, blob=blob, relative=relative)


def _no_lesion(empty: np.ndarray) -> _Lesions:
    return _Lesions(
        mask=empty,
        adc=np.zeros(0, dtype=np.float32),
        blob=np.zeros(0, dtype=np.int8),
        relative=np.zeros(0, dtype=np.float32),
    )


def _random_voxel(rng: np.random.Generator, tissue: np.ndarray, wanted: TissueClass) -> np.ndarray:
    """Index of a random voxel of class ``wanted`` (of any brain tissue if the class is absent).

    Rejection sampling first, as a full-grid search costs more than the whole blob.
    """
    tries = rng.integers(0, tissue.size, size=4096)
    hits = tries[tissue.ravel()[tries] == wanted]
    if hits.size:
        flat = int(hits[0])
    else:
        pool = np.flatnonzero(tissue == wanted)
        if pool.size == 0:
            pool = np.flatnonzero(tissue)
        flat = int(pool[rng.integers(pool.size)])
    return np.array(np.unravel_index(flat, tissue.shape))


def _score_blob(
    crop: _Crop,
    centre: np.ndarray,
    radii: np.ndarray,
    rotation: np.ndarray,
    roughness: np.ndarray,
    score: np.ndarray,
    blob_of: np.ndarray,
    blob: int,
) -> None:
    """Lower ``score`` to this blob's perturbed normalised radius within its bounding box."""
    reach = 2.5 * float(radii.max()) + LESION_IRREGULARITY * 3.0
    box = tuple(
        _index_range(axis, float(axis[c]) - reach, float(axis[c]) + reach) for axis, c in zip(crop.axes_mm, centre)
    )
    offsets = [axis[s] - axis[c] for axis, s, c in zip(crop.axes_mm, box, centre)]
    to_blob = (rotation.T / radii[:, None]).astype(np.float32)
    squared = np.zeros(tuple(len(o) for o in offsets), dtype=np.float32)
    for row in to_blob:
        plane = (row[0] * offsets[0])[:, None, None] + (row[1] * offsets[1])[None, :, None]
        squared += (plane + (row[2] * offsets[2])[None, None, :]) ** 2
    blob_score = np.sqrt(squared) + LESION_IRREGULARITY * roughness[box]
    better = blob_score < score[box]
    score[box] = np.where(better, blob_score, score[box])
    blob_of[box][better] = blob


def _acquire(
    rng: np.random.Generator,
    clean: np.ndarray,
    mask: np.ndarray,
    crop: _Crop,
    blur: np.ndarray,
    noise_fraction: float | None = None,
) -> np.ndarray:
    """Observed ADC: blur by ``blur`` (voxel sigmas), bias field and Rician noise; 0 outside the brain.

    ``noise_fraction`` (a site's) replaces the drawn noise level; the draw is made either way.
    """
    blurred = ndimage.gaussian_filter(clean, blur, truncate=GAUSSIAN_TRUNCATE, mode="nearest")
    bias = 1.0 + rng.uniform(*BIAS_AMPLITUDE) * _smooth_noise(rng, crop, BIAS_SCALE_MM)
    signal = blurred * bias
    fraction = rng.uniform(*NOISE_FRACTION)
    sigma = (fraction if noise_fraction is None else noise_fraction) * signal
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.where(mask, np.sqrt(real**2 + imaginary**2), np.float32(0.0)).astype(np.float32)


def _acquisition_sigma(rng: np.random.Generator, geometry: Geometry, resolution_mm: float | None = None) -> np.ndarray:
    """Per-axis sigma, in voxels, of the blur from the acquired resolution and partial volume.

    ``resolution_mm`` (a site's in-plane sigma) replaces the drawn one; the draw is made either way.
    """
    spacing = np.asarray(geometry.spacing)
    drawn_mm = rng.uniform(*IN_PLANE_RESOLUTION_SIGMA_MM)
    resolution_mm = drawn_mm if resolution_mm is None else resolution_mm
    sigma_mm = PARTIAL_VOLUME_VOXELS * spacing
    sigma_mm[:2] = np.maximum(sigma_mm[:2], resolution_mm)
    return sigma_mm / spacing


def _z_map(
    adc: np.ndarray, normative: _Normative, mask: np.ndarray, blur: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """Z_ADC against the normative maps, smoothed 2 mm within the brain and clipped to +/-10.

    The normative mean and std maps get the acquisition's blur (``blur``, voxel sigmas) and
    the 2 mm kernel, so healthy tissue reads about 0 even at partial-volume boundaries when
    the model is the lesion-free twin (basic). An imperfect model (:class:`_Normative` errors)
    widens the std at edges, scales it, and adds its z bias before the smoothing.
    """
    smooth_sigma = ZMAP_FWHM_MM * FWHM_TO_SIGMA / spacing
    normative_sigma = np.sqrt(blur**2 + smooth_sigma**2)
    expected = ndimage.gaussian_filter(normative.mean, normative_sigma, truncate=GAUSSIAN_TRUNCATE, mode="nearest")
    spread = ndimage.gaussian_filter(normative.std, normative_sigma, truncate=GAUSSIAN_TRUNCATE, mode="nearest")
    if normative.registration_sd_mm > 0 or normative.std_scale != 1.0:
        spread = fx.atlas_spread(expected, spread, spacing, normative.registration_sd_mm, normative.std_scale)
    weight = mask.astype(np.float32)
    raw = np.where(mask, (adc - expected) / spread, np.float32(0.0))
    if normative.z_bias is not None:
        raw = np.where(mask, raw + normative.z_bias, np.float32(0.0))
    smoothed = ndimage.gaussian_filter(raw, smooth_sigma, truncate=GAUSSIAN_TRUNCATE, mode="constant")
    support = ndimage.gaussian_filter(weight, smooth_sigma, truncate=GAUSSIAN_TRUNCATE, mode="constant")
    z = np.clip(smoothed / np.maximum(support, 1e-3), -ZMAP_CLIP, ZMAP_CLIP)
    return np.where(mask, z, np.float32(0.0)).astype(np.float32)


def _anatomy_effects(
    active: dict[str, fx.ActiveEffect], head: _Head, geometry: Geometry, crop: _Crop, brain: _Brain
) -> tuple[_Crop, _Brain, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Add the cerebellum and brainstem (growing the crop to reach them) and the internal capsule.

    Returns the crop, the brain and, when a later effect needs them, the crop's normalised
    coordinates. Each structure is drawn within its own box of the crop only.
    """
    tissue, mask = brain.tissue, brain.mask
    hindbrain = active.get("hindbrain")
    if hindbrain:
        params = hindbrain.params
        crop, brain = _grow_crop(head, geometry, crop, brain, *fx.hindbrain_box(params))
        tissue, mask = brain.tissue, brain.mask
        box = _reference_box(head, crop, *fx.cerebellum_box(params))
        axes = [axis[s] for axis, s in zip(crop.axes_mm, box)]
        cerebellum, envelope = fx.cerebellum(hindbrain.rng, params, _reference_coordinates(head, axes), axes)
        paintable = tissue[box] != TissueClass.DEEP_GREY
        tissue[box][cerebellum & paintable] = TissueClass.CEREBELLUM
        tissue[box][envelope & paintable] = TissueClass.CSF
        mask[box] |= (cerebellum | envelope) & paintable
        box = _reference_box(head, crop, *fx.brainstem_box(params))
        brainstem = fx.brainstem(params, _reference_coordinates(head, [axis[s] for axis, s in zip(crop.axes_mm, box)]))
        tissue[box][brainstem] = TissueClass.BRAINSTEM
        mask[box] |= brainstem
    myelination = active.get("myelination")
    if myelination:
        box = _reference_box(head, crop, *fx.internal_capsule_box())
        reference = _reference_coordinates(head, [axis[s] for axis, s in zip(crop.axes_mm, box)])
        tract = fx.internal_capsule(reference, bool(myelination.params["corticospinal"]))
        tissue[box][tract & (tissue[box] == TissueClass.WHITE_MATTER)] = TissueClass.INTERNAL_CAPSULE
    coordinates = None
    if active.keys() & {"susceptibility", "rim", "cut"}:
        coordinates = _normalised_coordinates(head, crop)
    return crop, brain, coordinates


def _reference_box(
    head: _Head, crop: _Crop, low_mm: Sequence[float], high_mm: Sequence[float]
) -> tuple[slice, slice, slice]:
    """Crop-relative slices of the voxels that a brain-frame box (reference mm) can reach."""
    scale = head.semi_axes / np.asarray(REFERENCE_SEMI_AXES_MM)
    corners = np.array(np.meshgrid(*zip(low_mm, high_mm), indexing="ij")).reshape(3, -1).T * scale
    corners_mm = head.centre + corners @ head.rotation.T
    return tuple(
        _index_range(axis, float(lo), float(hi))
        for axis, lo, hi in zip(crop.axes_mm, corners_mm.min(axis=0), corners_mm.max(axis=0))
    )


def _reference_coordinates(head: _Head, axes_mm: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain-frame coordinates, in reference mm, of the voxels of a box with these grid axes."""
    box = _Crop(slices=(slice(None),) * 3, axes_mm=tuple(axes_mm), spacing=np.ones(3))
    return tuple(c * np.float32(r) for c, r in zip(_normalised_coordinates(head, box), REFERENCE_SEMI_AXES_MM))


def _grow_crop(
    head: _Head, geometry: Geometry, crop: _Crop, brain: _Brain, low_mm: np.ndarray, high_mm: np.ndarray
) -> tuple[_Crop, _Brain]:
    """Grow the crop to hold a brain-frame box (reference mm) plus the blur margin, clipped to
    the grid, and pad the brain's arrays to it."""
    scale = head.semi_axes / np.asarray(REFERENCE_SEMI_AXES_MM)
    corners = np.array(np.meshgrid(*zip(low_mm, high_mm), indexing="ij")).reshape(3, -1).T * scale
    corners_mm = head.centre + corners @ head.rotation.T
    axes = _grid_axes_mm(geometry)
    slices, pads = [], []
    for axis, spacing, current, low, high in zip(
        axes, geometry.spacing, crop.slices, corners_mm.min(axis=0), corners_mm.max(axis=0)
    ):
        inside = np.flatnonzero((axis >= low - 3 * spacing) & (axis <= high + 3 * spacing))
        start, stop = current.start, current.stop
        if inside.size:
            start, stop = min(start, int(inside[0])), max(stop, int(inside[-1]) + 1)
        slices.append(slice(start, stop))
        pads.append((current.start - start, stop - current.stop))
    grown = _Crop(slices=tuple(slices), axes_mm=tuple(a[s] for a, s in zip(axes, slices)), spacing=crop.spacing)
    padded = _Brain(
        tissue=np.pad(brain.tissue, pads),
        mask=np.pad(brain.mask, pads),
        radius=np.pad(brain.radius, pads, constant_values=np.float32(np.inf)),
    )
    return grown, padded


def _add_effect_tissue_means(active: dict[str, fx.ActiveEffect], table: np.ndarray) -> None:
    """Enter the effects' tissues in the case's table of mean ADC."""
    table[TissueClass.NON_BRAIN] = table[TissueClass.BACKGROUND]
    if "hindbrain" in active:
        table[TissueClass.CEREBELLUM] = active["hindbrain"].params["cerebellum_adc"]
        table[TissueClass.BRAINSTEM] = active["hindbrain"].params["brainstem_adc"]
    if "myelination" in active:
        table[TissueClass.INTERNAL_CAPSULE] = active["myelination"].params["adc"]


def _std_table() -> np.ndarray:
    """Look-up table tissue code -> normative std; background (and leftover rim) reads as CSF."""
    table = np.ones(len(TissueClass), dtype=np.float32)
    for tissue_class, params in TISSUES.items():
        table[tissue_class] = params.normative_std
    for tissue_class, std in EFFECT_TISSUE_STD.items():
        table[tissue_class] = std
    table[TissueClass.BACKGROUND] = table[TissueClass.CSF]
    table[TissueClass.NON_BRAIN] = table[TissueClass.CSF]
    return table


def _normative_model(
    active: dict[str, fx.ActiveEffect], brain: _Brain, normal: np.ndarray, tissue_means: np.ndarray, crop: _Crop
) -> _Normative:
    """The normative maps Z_ADC is computed against.

    Basic: the brain's own lesion-free means. The myelination effect makes the model only
    partly know the internal capsule; the normative effect misregisters the model's tissue map
    and adds its bias, offset and std errors, all made smaller by the accurate-atlas effect. Neither
    knows the site's ADC scale.
    """
    std_table = _std_table()
    myelination, error = active.get("myelination"), active.get("normative")
    if myelination is None and error is None:
        return _Normative(mean=normal, std=std_table[brain.tissue])
    mean_table = tissue_means.copy()
    if myelination:
        mean_table[TissueClass.INTERNAL_CAPSULE] = fx.partly_known_mean(
            float(myelination.params["adc"]),
            float(myelination.params["normative_z"]),
            float(std_table[TissueClass.INTERNAL_CAPSULE]),
            float(tissue_means[TissueClass.WHITE_MATTER]),
        )
    if error is None:
        return _Normative(mean=mean_table[brain.tissue], std=std_table[brain.tissue])
    accurate = active.get("accurate_atlas")
    params = fx.scaled_atlas_error(error.params, float(accurate.params["error_scale"])) if accurate else error.params
    mean, std = fx.misregistered_lookup(
        error.rng,
        brain.tissue,
        (mean_table, std_table),
        crop.axes_mm,
        crop.spacing,
        float(params["misregistration_mm"]),
        float(params["warp_mm"]),
    )
    bias = fx.normative_bias(
        error.rng, crop.axes_mm, float(params["regional_bias_z"]), float(params["global_offset_z"])
    )
    return _Normative(
        mean=mean,
        std=std,
        z_bias=bias,
        std_scale=float(params["std_scale"]),
        registration_sd_mm=fx.ATLAS_REGISTRATION_SD_MM,
    )


def _lesion_adc(active: dict[str, fx.ActiveEffect], lesions: _Lesions, normal: np.ndarray, brain: _Brain) -> np.ndarray:
    """The lesions' ADC: as drawn, pseudo-normalised (faint) from the tissue's normal ADC and std, or with some
    blobs at a fraction of the tissue's normal ADC (mild)."""
    faint, mild = active.get("faint"), active.get("mild_lesions")
    if not lesions.mask.any():
        return lesions.adc
    if faint is not None:
        std = _std_table()[brain.tissue[lesions.mask]]
        return fx.faint_lesion_adc(faint.rng, faint.settings.z, normal[lesions.mask], std, lesions.blob,
                                   lesions.relative)
    if mild is not None:
        return fx.mild_lesion_adc(mild.rng, mild.settings, lesions.adc, normal[lesions.mask], lesions.blob,
                                  lesions.relative)
    return lesions.adc


def _tissue_effects(
    active: dict[str, fx.ActiveEffect],
    head: _Head,
    crop: _Crop,
    brain: _Brain,
    clean: np.ndarray,
    lesion: np.ndarray,
    coordinates: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, _Brain, np.ndarray]:
    """Effects on the clean image, the mask and the label, before the acquisition: folia
    texture, confounders, imperfect skull strip and interleaved-slice motion (in this order)."""
    tissue, mask = brain.tissue, brain.mask
    hindbrain = active.get("hindbrain")
    if hindbrain:
        cerebellum = tissue == TissueClass.CEREBELLUM
        box = fx.bounding_box(cerebellum)
        if box is not None:
            texture = fx.folia_texture(
                hindbrain.rng, float(hindbrain.params["folia_contrast"]), [a[s] for a, s in zip(crop.axes_mm, box)]
            )
            clean[box] = np.where(cerebellum[box], clean[box] * texture, clean[box])
    susceptibility = active.get("susceptibility")
    if susceptibility:
        region = fx.skull_base_region(coordinates, brain.radius) & mask & np.isin(tissue, CEREBRAL_SURFACE)
        settings = susceptibility.settings
        count = int(susceptibility.params["count"])
        fx.paint_blobs(
            susceptibility.rng,
            clean,
            region,
            lesion,
            crop.axes_mm,
            count,
            settings.diameter_mm,
            settings.adc,
            fx.SUSCEPTIBILITY_EDGE,
        )
    blood = active.get("blood")
    if blood:
        parenchyma = mask & np.isin(tissue, PARENCHYMA)
        settings, count = blood.settings, int(blood.params["count"])
        fx.paint_blobs(
            blood.rng, clean, parenchyma, lesion, crop.axes_mm, count, settings.diameter_mm, settings.adc, fx.BLOOD_EDGE
        )
    rim = active.get("rim")
    if rim:
        voxels, values = fx.leftover_rim(
            rim.rng, rim.params, rim.settings.adc, brain.radius, coordinates, head.semi_axes, ~mask, crop.axes_mm
        )
        clean[voxels] = values
        tissue[voxels] = TissueClass.NON_BRAIN
        mask |= voxels
    cut = active.get("cut")
    if cut:
        cap = fx.cut_cap(cut.params, coordinates, head.semi_axes, mask)
        mask &= ~cap
        tissue[cap] = TissueClass.BACKGROUND
        lesion = lesion & ~cap
    motion = active.get("motion")
    if motion:
        odd = np.arange(crop.slices[2].start, crop.slices[2].stop) % 2 == 1
        dx, dy = fx.interleaved_offsets(motion.params, crop.spacing)
        clean, tissue, mask, lesion = (fx.shift_interleaved(a, odd, dx, dy) for a in (clean, tissue, mask, lesion))
    return clean, _Brain(tissue=tissue, mask=mask, radius=brain.radius), lesion


def _acquisition_effects(
    active: dict[str, fx.ActiveEffect], adc: np.ndarray, head: _Head, brain: _Brain, crop: _Crop, geometry: Geometry
) -> np.ndarray:
    """Effects on the acquired ADC: per-slice intensity scaling (motion) and the N/2 ghost."""
    motion = active.get("motion")
    if motion:
        factors = fx.slice_factors(motion.rng, float(motion.params["slice_scaling"]), adc.shape[2])
        adc = adc * factors[None, None, :]
    ghosting = active.get("ghosting")
    if ghosting:
        axis, amplitude = int(ghosting.params["axis"]), float(ghosting.params["amplitude"])
        source = fx.head_signal(adc, brain.mask, brain.radius, head.semi_axes)
        adc = fx.add_ghost(adc, source, brain.mask, axis, crop.slices[axis].start, geometry.size[axis], amplitude)
    return adc


def _assemble(
    case_id: str,
    geometry: Geometry,
    crop: _Crop,
    adc: np.ndarray,
    zadc: np.ndarray,
    lesion: np.ndarray,
    tissue: np.ndarray,
) -> SyntheticCase:
    """Paste the crop's arrays into full grids and wrap them as images of the case's geometry."""
    reference = sitk.Image(list(geometry.size), sitk.sitkUInt8)
    reference.SetSpacing(geometry.spacing)
    reference.SetOrigin(geometry.origin)
    reference.SetDirection(geometry.direction)

    def full(array: np.ndarray, dtype: type) -> np.ndarray:
        grid = np.zeros(geometry.size, dtype=dtype)
        grid[crop.slices] = array
        return grid

    return SyntheticCase(
        case_id=case_id,
        adc=from_xyz_array(full(adc, np.float32), reference),
        zadc=from_xyz_array(full(zadc, np.float32), reference),
        label=from_xyz_array(full(lesion, np.uint8), reference),
        tissue=full(tissue, np.uint8),
    )
