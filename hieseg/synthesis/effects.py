"""Realism effects of the synthetic generator: what makes a case hard the way real data is hard.

:func:`hieseg.synthesis.generator.make_case` draws, by default (profile ``"basic"``), an "easy" case: its
Z_ADC is computed against the same brain's own lesion-free tissue means, so the lesions read -3
to -8 and nothing else is dark, and a network trained on it learns "Z < -3". This module holds
the effects that break that shortcut, each switched on per case with a probability and drawn
from documented ranges, grouped in a :class:`RealismProfile`:

* ``BASIC``: every effect off; ``make_case`` gives today's cases bit for bit.
* ``RANDOMISED``: the training profile.
* ``SHIFTED``: an out-of-distribution test profile written as ``RANDOMISED`` plus the changes,
  so its differences are visible at a glance: held-out artefact families (blood products and
  N/2 ghosting never occur in ``RANDOMISED``), site parameters (ADC scale, noise, in-plane
  resolution) and normative-model errors outside the training ranges, other hindbrain sizes
  and a higher lesion-free rate. :data:`HELD_OUT` lists the parameters whose ranges do not
  overlap; a test checks it.

Each effect draws from its own random stream, a child of the case's seed sequence after the
four streams of the basic generator (``SeedSequence(seed).spawn(4 + len(EFFECTS))``): the
basic draws never move, and switching one effect on or off leaves the other effects' draws
alone (only what depends on array shapes, e.g. noise on a crop grown for the cerebellum,
changes). Use :meth:`RealismProfile.only` to build a case with a single effect, e.g. against
its basic twin of the same seed.

The functions below are plain array operations on the generator's crop; the wiring, the tissue
codes and the order of the steps live in :mod:`hieseg.synthesis.generator`. Ranges are
``Ranges``: a union of closed intervals, drawn uniformly over their total length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Interval = tuple[float, float]
Ranges = tuple[Interval, ...]
"""A union of closed intervals; :func:`draw_from` draws uniformly over its total length."""
Params = dict[str, float | int | str]

EFFECTS = (
    "lesion_free",
    "normative",
    "hindbrain",
    "myelination",
    "faint",
    "susceptibility",
    "blood",
    "site",
    "rim",
    "cut",
    "motion",
    "ghosting",
    "small_lesions",
    "mild_lesions",
    "accurate_atlas",
)
"""Effect names, in the order of their random streams: append new effects at the end only."""

BASIC_STREAMS = 4
"""Streams of the basic generator (geometry, anatomy, lesions, acquisition) before the effects'."""

# Fixed shapes of the effects, in reference mm: the brain frame of hieseg.synthesis.generator's reference
# brain (semi-axes 45 x 55 x 40 mm; +x lateral, paired structures mirrored; +y posterior;
# +z superior), scaled with each case's brain.
WARP_SCALE_MM = 30.0
"""Feature size of the smooth part of the normative model's misregistration."""
REGIONAL_BIAS_SCALE_MM = 40.0
"""Feature size of the normative model's smooth regional z bias."""
ATLAS_REGISTRATION_SD_MM = 0.5
"""A population atlas's std includes its subjects' residual registration spread: at a tissue
edge the atlas std grows as sqrt(std^2 + (|grad mean| * this)^2), so a misregistration of d mm
reads about 2d z at a sharp edge (before the 2 mm smoothing) instead of 5-10."""
CEREBELLUM_CENTRE_MM = (0.0, 30.0, -34.0)
CEREBELLUM_SEMI_AXES_MM = (25.0, 18.0, 13.0)
"""Neonatal cerebellum at scale 1, in reference mm (about 25 ml with its CSF envelope)."""
CEREBELLUM_DEFORMATION = 0.06
CEREBELLUM_DEFORMATION_SCALE_MM = 12.0
CEREBELLUM_CSF_SHELL = 0.1
"""Outer part of the cerebellum's normalised radius that is CSF (tentorium, cisterna magna)."""
FOLIA_SCALE_MM = 2.5
BRAINSTEM_TOP_MM = (0.0, 4.0, -6.0)
"""Top of the brainstem's axis, between the thalami (midbrain)."""
BRAINSTEM_BOTTOM_MM = (0.0, 12.0, -80.0)
"""Bottom of the axis (medulla): usually below the field of view, which then clips it."""
PONS_CENTRE_MM = -30.0
PONS_HALF_HEIGHT_MM = 9.0
PONS_BULGE = 0.2
MEDULLA_TAPER = (-48.0, -68.0, 0.35)
"""Between these two heights (reference mm) the brainstem's radius shrinks by this fraction."""
PLIC_CENTRE_MM = (15.5, 3.0, -1.0)
PLIC_SEMI_AXES_MM = (3.0, 11.0, 8.0)
PLIC_ANGLE_DEG = 25.0
"""Posterior limb of the internal capsule, right side (mirrored): a slab between thalamus and
lentiform nucleus whose posterior end turns laterally; painted over white matter only."""
CORTICOSPINAL_MM = ((17.0, 6.0, 4.0), (21.0, 8.0, 30.0), 2.5)
"""Corticospinal band, right side: axis from, axis to and radius, in reference mm."""
NORMATIVE_STD = {"cerebellum": 130.0, "brainstem": 110.0, "internal_capsule": 120.0}
"""Normative std of the tissues the effects add, in 10^-6 mm^2/s."""
FAINT_CORE_FACTOR = 1.15
FAINT_RIM_FACTOR = 0.85
"""A faint blob's target z is scaled by the first at its core and the second at its rim."""
MILD_CORE_FACTOR = 0.9
MILD_RIM_FACTOR = 1.1
"""A mild blob's ADC ratio is scaled by the first at its core and the second at its rim."""
SKULL_BASE_DEPTH = 0.25
"""Susceptibility blobs are centred within this normalised depth of the cerebrum's surface."""
BLOB_ASPECT_SD = 0.25
SUSCEPTIBILITY_EDGE = 0.5
BLOOD_EDGE = 0.15
"""Fraction of a blob's radius over which its ADC fades back to the tissue's (soft or sharp)."""
RIM_TEXTURE_SCALE_MM = 6.0
CUT_SIDES = ("top", "front")
PHASE_ENCODING_AXIS = 1
"""Grid axis of the N/2 ghost's shift: y, antero-posterior."""
GHOST_HEAD_MARGIN_MM = 10.0
GHOST_SCALP_LEVEL = 1500.0
"""The ghost's source is the head: the brain's ADC plus a scalp and skull shell this deep
beyond the brain at this level (the skull-stripped image lacks it, the acquired signal had it)."""


def draw_from(rng: np.random.Generator, ranges: Ranges) -> float:
    """A uniform draw over a union of intervals (each interval weighted by its length)."""
    widths = np.array([high - low for low, high in ranges], dtype=float)
    if len(ranges) == 1 or widths.sum() <= 0:
        low, high = ranges[int(rng.integers(len(ranges)))] if len(ranges) > 1 else ranges[0]
    else:
        low, high = ranges[int(rng.choice(len(ranges), p=widths / widths.sum()))]
    return float(rng.uniform(low, high))


def signed(rng: np.random.Generator, magnitude: Ranges) -> float:
    """A magnitude from ``magnitude`` with a random sign."""
    value = draw_from(rng, magnitude)
    return value if rng.random() < 0.5 else -value


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(3)
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


# --- Settings of each effect: a probability and the ranges its per-case parameters come from ----


@dataclass(frozen=True)
class LesionFree:
    """The release has cases with an empty label: a default-burden case drawn without lesion."""

    probability: float

    def draw(self, rng: np.random.Generator) -> Params:
        return {}


@dataclass(frozen=True)
class NormativeError:
    """Z_ADC against an imperfect normative model instead of the brain's own lesion-free means.

    The normative mean and std maps are looked up on a misregistered tissue map (a rigid shift
    plus a smooth warp, so errors appear near tissue edges); the z map gets a smooth regional
    bias and a global offset, and the std a scale error. The model never knows the site's ADC
    scale (see :class:`Site`).
    """

    probability: float
    misregistration_mm: Ranges
    """Length of the rigid shift, in a random direction."""
    warp_mm: Ranges
    """Std of each component of the smooth warp (features of ``WARP_SCALE_MM``)."""
    regional_bias_z: Ranges
    """Std of the smooth additive z bias (features of ``REGIONAL_BIAS_SCALE_MM``)."""
    global_offset_z: Ranges
    """Magnitude of a constant additive z offset; its sign is random."""
    std_scale: Ranges
    """Factor on the normative std."""

    def draw(self, rng: np.random.Generator) -> Params:
        return {
            "misregistration_mm": draw_from(rng, self.misregistration_mm),
            "warp_mm": draw_from(rng, self.warp_mm),
            "regional_bias_z": draw_from(rng, self.regional_bias_z),
            "global_offset_z": signed(rng, self.global_offset_z),
            "std_scale": draw_from(rng, self.std_scale),
        }


@dataclass(frozen=True)
class Hindbrain:
    """Cerebellum (inferior-posterior, with folia texture) and brainstem (down from the thalami).

    Both are brain (ADC > 0) and never lesioned; the crop grows to reach them and the grid's
    field of view clips them, as in a real scan.
    """

    probability: float
    cerebellum_scale: Ranges
    """Factor on ``CEREBELLUM_SEMI_AXES_MM``."""
    cerebellum_adc: Ranges
    folia_contrast: Ranges
    """Amplitude of the folia's multiplicative ADC texture."""
    brainstem_radius_mm: Ranges
    brainstem_adc: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        return {
            "cerebellum_scale": draw_from(rng, self.cerebellum_scale),
            "cerebellum_adc": draw_from(rng, self.cerebellum_adc),
            "folia_contrast": draw_from(rng, self.folia_contrast),
            "brainstem_radius_mm": draw_from(rng, self.brainstem_radius_mm),
            "brainstem_adc": draw_from(rng, self.brainstem_adc),
        }


@dataclass(frozen=True)
class Myelination:
    """Lower-ADC posterior limb of the internal capsule (and maybe a corticospinal band).

    The normative model only partly knows it: its normative mean is set so that the tract reads
    ``normative_z`` (before blur), i.e. mildly negative. Not lesion.
    """

    probability: float
    adc: Ranges
    normative_z: Ranges
    corticospinal_probability: float

    def draw(self, rng: np.random.Generator) -> Params:
        return {
            "adc": draw_from(rng, self.adc),
            "normative_z": draw_from(rng, self.normative_z),
            "corticospinal": int(rng.random() < self.corticospinal_probability),
        }


@dataclass(frozen=True)
class FaintLesions:
    """Pseudo-normalised lesions: each blob's ADC is set from its tissue's normal ADC and
    normative std so that it reads a target z in ``z`` (core x1.15, rim x0.85)."""

    probability: float
    z: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        return {}


@dataclass(frozen=True)
class SmallLesions:
    """Punctate and small multifocal lesions: a case's default burden is replaced by one drawn log-uniformly
    from ``burden`` (fractions of the brain), spread over a number of blobs drawn from ``blobs``.

    Punctate white-matter lesions of a few to a few tens of mm^3 are a common HIE pattern that the
    basic burden floor (0.05 % of the brain, about 200 mm^3) never draws.
    """

    probability: float
    burden: Interval
    blobs: tuple[int, int]

    def draw(self, rng: np.random.Generator) -> Params:
        low, high = (math.log(bound) for bound in self.burden)
        return {"burden": float(math.exp(rng.uniform(low, high))),
                "blobs": int(rng.integers(self.blobs[0], self.blobs[1] + 1))}


@dataclass(frozen=True)
class MildLesions:
    """Milder restriction, relative to the tissue: each blob, with probability ``blob_probability``, has an
    ADC of a fraction ``ratio`` of its tissue's normal ADC (x0.9 at its core to x1.1 at its rim) instead of
    the basic absolute level (450-850).

    Restriction is a reduction of the tissue's own diffusivity, and its degree varies between lesions
    and with the scan's timing (pseudo-normalisation); a lesion at 0.7 x its white matter is plainly
    visible and labelled.
    """

    probability: float
    blob_probability: float
    ratio: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        return {}


@dataclass(frozen=True)
class AccurateAtlas:
    """A normative model nearly as good as one can be: the normative effect's drawn errors (misregistration,
    warp, regional bias, global offset and the std scale's distance from 1) times a factor ``error_scale``.

    Atlases differ in quality between sites and pipelines. Without this effect every training case carries
    at least 0.5 mm of misregistration and 0.3 z of regional bias, and a compact region at Z_ADC -2.5 is as
    likely normative error as lesion whatever the rest of the map looks like. With it, the training set spans
    accurate to poor atlases (what that did to the demo weights: docs/quality.md, v7). Only acts where the
    normative effect is on.
    """

    probability: float
    error_scale: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        return {"error_scale": draw_from(rng, self.error_scale)}


@dataclass(frozen=True)
class _LowAdcBlobs:
    """A random number of low-ADC blobs that are not lesions; where they go is the effect's."""

    probability: float
    count: tuple[int, int]
    diameter_mm: Ranges
    adc: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        return {"count": int(rng.integers(self.count[0], self.count[1] + 1))}


@dataclass(frozen=True)
class Susceptibility(_LowAdcBlobs):
    """Low-ADC blobs at the skull base and sinuses (inferior frontal and temporal surface)."""


@dataclass(frozen=True)
class BloodProducts(_LowAdcBlobs):
    """Small, sharp low-ADC blobs anywhere in the parenchyma (haemorrhage, mineralisation)."""


@dataclass(frozen=True)
class Site:
    """Scanner and site: ADC scale (1.5 T vs 3 T, b-values), Rician noise, in-plane resolution."""

    probability: float
    adc_scale: Ranges
    noise_fraction: Ranges
    """Rician sigma as a fraction of the local ADC (basic: 3-7 %)."""
    resolution_sigma_mm: Ranges
    """Sigma of the in-plane blur of the acquisition (basic: 0.5-0.9 mm)."""

    def draw(self, rng: np.random.Generator) -> Params:
        return {
            "adc_scale": draw_from(rng, self.adc_scale),
            "noise_fraction": draw_from(rng, self.noise_fraction),
            "resolution_sigma_mm": draw_from(rng, self.resolution_sigma_mm),
        }


@dataclass(frozen=True)
class LeftoverRim:
    """Imperfect skull strip: a shell of non-brain tissue left over a sector just outside the
    brain. It is brain for the pipeline (ADC > 0); its Z is what the normative model gives there."""

    probability: float
    thickness_mm: Ranges
    sector_half_angle_deg: Ranges
    adc: Interval
    """The rim's ADC varies smoothly over this range (dura, muscle, fat, scalp)."""

    def draw(self, rng: np.random.Generator) -> Params:
        direction = _unit_vector(rng)
        return {
            "thickness_mm": draw_from(rng, self.thickness_mm),
            "sector_half_angle_deg": draw_from(rng, self.sector_half_angle_deg),
            "direction_x": float(direction[0]),
            "direction_y": float(direction[1]),
            "direction_z": float(direction[2]),
        }


@dataclass(frozen=True)
class CutBrain:
    """Imperfect skull strip: a cap removed at the top or the front (ADC, Z and label 0 there)."""

    probability: float
    depth_mm: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        return {"side": CUT_SIDES[int(rng.integers(len(CUT_SIDES)))], "depth_mm": draw_from(rng, self.depth_mm)}


@dataclass(frozen=True)
class Motion:
    """Motion between slices: per-slice intensity scaling and an in-plane shift of the
    interleaved (odd) slices, which moves their anatomy, mask and label but not the normative map."""

    probability: float
    slice_scaling: Ranges
    """Each slice's ADC is scaled by a factor uniform in 1 +/- this."""
    shift_mm: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        angle = rng.uniform(-math.pi, math.pi)
        shift = draw_from(rng, self.shift_mm)
        return {
            "slice_scaling": draw_from(rng, self.slice_scaling),
            "shift_x_mm": shift * math.cos(angle),
            "shift_y_mm": shift * math.sin(angle),
        }


@dataclass(frozen=True)
class Ghosting:
    """N/2 ghost: a copy of the signal shifted by half the field of view along the
    phase-encoding axis, added inside the brain. Neonatal axial EPI is phase-encoded
    antero-posteriorly (grid y), where the ghost of one pole lands on the other (the brain is
    about as long as half the field of view); the ghost of the scalp is not modelled."""

    probability: float
    amplitude: Ranges

    def draw(self, rng: np.random.Generator) -> Params:
        return {"amplitude": draw_from(rng, self.amplitude), "axis": PHASE_ENCODING_AXIS}


@dataclass(frozen=True)
class RealismProfile:
    """Per-case probability and parameter ranges of every effect (field names = ``EFFECTS``)."""

    name: str
    lesion_free: LesionFree
    normative: NormativeError
    hindbrain: Hindbrain
    myelination: Myelination
    faint: FaintLesions
    susceptibility: Susceptibility
    blood: BloodProducts
    site: Site
    rim: LeftoverRim
    cut: CutBrain
    motion: Motion
    ghosting: Ghosting
    small_lesions: SmallLesions
    mild_lesions: MildLesions
    accurate_atlas: AccurateAtlas

    def probabilities(self) -> dict[str, float]:
        """Each effect's per-case probability."""
        return {name: getattr(self, name).probability for name in EFFECTS}

    def only(self, *names: str) -> RealismProfile:
        """This profile's ranges with ``names`` always on and every other effect off."""
        unknown = set(names) - set(EFFECTS)
        if unknown:
            raise ValueError(f"unknown effect(s) {sorted(unknown)}; known: {', '.join(EFFECTS)}")
        changes = {name: dataclasses.replace(getattr(self, name), probability=float(name in names)) for name in EFFECTS}
        return dataclasses.replace(self, name=f"{self.name}[{'+'.join(names) or 'none'}]", **changes)

    def without(self, *names: str) -> RealismProfile:
        """This profile with ``names`` switched off."""
        unknown = set(names) - set(EFFECTS)
        if unknown:
            raise ValueError(f"unknown effect(s) {sorted(unknown)}; known: {', '.join(EFFECTS)}")
        changes = {name: dataclasses.replace(getattr(self, name), probability=0.0) for name in names}
        return dataclasses.replace(self, name=f"{self.name}-{'-'.join(names)}", **changes)


RANDOMISED = RealismProfile(
    name="randomised",
    lesion_free=LesionFree(probability=0.10),
    normative=NormativeError(
        probability=1.0,
        misregistration_mm=((0.5, 2.0),),
        warp_mm=((0.3, 1.0),),
        regional_bias_z=((0.3, 0.8),),
        global_offset_z=((0.0, 0.5),),
        std_scale=((0.8, 1.25),),
    ),
    hindbrain=Hindbrain(
        probability=0.85,
        cerebellum_scale=((0.9, 1.1),),
        cerebellum_adc=((1100.0, 1300.0),),
        folia_contrast=((0.05, 0.12),),
        brainstem_radius_mm=((7.0, 10.0),),
        brainstem_adc=((1000.0, 1200.0),),
    ),
    myelination=Myelination(
        probability=0.7, adc=((900.0, 1150.0),), normative_z=((-3.0, -1.25),), corticospinal_probability=0.5
    ),
    faint=FaintLesions(probability=0.3, z=((-3.0, -1.5),)),
    susceptibility=Susceptibility(probability=0.5, count=(1, 3), diameter_mm=((5.0, 20.0),), adc=((300.0, 800.0),)),
    blood=BloodProducts(probability=0.0, count=(1, 6), diameter_mm=((2.0, 6.0),), adc=((200.0, 600.0),)),
    site=Site(
        probability=1.0,
        adc_scale=((0.93, 1.07),),
        noise_fraction=((0.03, 0.09),),
        resolution_sigma_mm=((0.5, 0.9),),
    ),
    rim=LeftoverRim(
        probability=0.2, thickness_mm=((1.0, 4.0),), sector_half_angle_deg=((30.0, 70.0),), adc=(600.0, 2000.0)
    ),
    cut=CutBrain(probability=0.1, depth_mm=((5.0, 15.0),)),
    motion=Motion(probability=0.3, slice_scaling=((0.03, 0.08),), shift_mm=((0.5, 2.0),)),
    ghosting=Ghosting(probability=0.0, amplitude=((0.03, 0.10),)),
    small_lesions=SmallLesions(probability=0.25, burden=(0.00002, 0.002), blobs=(2, 10)),
    mild_lesions=MildLesions(probability=0.4, blob_probability=0.6, ratio=((0.55, 0.8),)),
    accurate_atlas=AccurateAtlas(probability=0.3, error_scale=((0.0, 0.25),)),
)
"""The training profile. Blood products and ghosting have probability 0: held out for SHIFTED."""

SHIFTED = dataclasses.replace(
    RANDOMISED,
    name="shifted",
    lesion_free=LesionFree(probability=0.15),
    normative=dataclasses.replace(
        RANDOMISED.normative,
        misregistration_mm=((2.25, 2.75),),
        warp_mm=((1.1, 1.4),),
        regional_bias_z=((0.85, 1.0),),
        global_offset_z=((0.55, 0.65),),
        std_scale=((0.72, 0.78), (1.28, 1.38)),
    ),
    hindbrain=dataclasses.replace(
        RANDOMISED.hindbrain,
        probability=1.0,
        cerebellum_scale=((0.75, 0.85), (1.15, 1.25)),
        brainstem_radius_mm=((5.5, 6.5), (10.5, 11.5)),
    ),
    faint=dataclasses.replace(RANDOMISED.faint, probability=0.4),
    blood=dataclasses.replace(RANDOMISED.blood, probability=0.5),
    site=dataclasses.replace(
        RANDOMISED.site,
        adc_scale=((0.89, 0.92), (1.08, 1.11)),
        noise_fraction=((0.095, 0.12),),
        resolution_sigma_mm=((1.0, 1.5),),
    ),
    ghosting=dataclasses.replace(RANDOMISED.ghosting, probability=0.4),
    small_lesions=dataclasses.replace(RANDOMISED.small_lesions, probability=0.0),
    mild_lesions=dataclasses.replace(RANDOMISED.mild_lesions, probability=0.0),
    accurate_atlas=dataclasses.replace(RANDOMISED.accurate_atlas, probability=0.0),
)
"""Out-of-distribution test profile: RANDOMISED with only these differences. Small and mild lesions and the
accurate atlas, added to RANDOMISED after SHIFTED was first scored, stay off, so that its cases (and every
figure measured on them) are those of before."""

ACCURATE_ATLAS = dataclasses.replace(
    RANDOMISED.without("accurate_atlas"),
    name="accurate-atlas",
    normative=dataclasses.replace(
        RANDOMISED.normative,
        misregistration_mm=((0.0, 0.2),),
        warp_mm=((0.0, 0.1),),
        regional_bias_z=((0.0, 0.1),),
        global_offset_z=((0.0, 0.05),),
        std_scale=((0.95, 1.05),),
    ),
)
"""Test profile: the cases of RANDOMISED without its accurate_atlas effect (every other draw the same) against a
near-exact normative model. Scored beside those cases (``randomised --without accurate_atlas``, same seed), it
shows whether weights use a trustworthy Z_ADC as a threshold does (``scripts/atlas_check.sh``)."""

BASIC = dataclasses.replace(RANDOMISED.only(), name="basic")
"""Every effect off: today's easy cases, bit for bit."""

PROFILES: dict[str, RealismProfile] = {
    "basic": BASIC, "randomised": RANDOMISED, "shifted": SHIFTED, "accurate-atlas": ACCURATE_ATLAS
}

HELD_OUT: tuple[tuple[str, str], ...] = (
    ("site", "adc_scale"),
    ("site", "noise_fraction"),
    ("site", "resolution_sigma_mm"),
    ("normative", "misregistration_mm"),
    ("normative", "warp_mm"),
    ("normative", "regional_bias_z"),
    ("normative", "global_offset_z"),
    ("normative", "std_scale"),
    ("hindbrain", "cerebellum_scale"),
    ("hindbrain", "brainstem_radius_mm"),
)
"""(effect, parameter) whose SHIFTED ranges never overlap the RANDOMISED ones."""
HELD_OUT_EFFECTS = ("blood", "ghosting")
"""Effects that only SHIFTED uses."""


def resolve_profile(profile: str | RealismProfile) -> RealismProfile:
    """The profile named ``profile`` (one of ``PROFILES``), or ``profile`` itself."""
    if isinstance(profile, RealismProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]


@dataclass
class ActiveEffect:
    """An effect switched on for one case: its settings, drawn parameters and own random stream."""

    settings: object
    params: Params
    rng: np.random.Generator


def switch_on(profile: RealismProfile, streams: Sequence[np.random.SeedSequence]) -> dict[str, ActiveEffect]:
    """Decide, per effect and from its own stream, whether it is on; draw its parameters if so."""
    active = {}
    for name, stream in zip(EFFECTS, streams, strict=True):
        rng = np.random.default_rng(stream)
        settings = getattr(profile, name)
        if rng.random() < settings.probability:
            active[name] = ActiveEffect(settings, settings.draw(rng), rng)
    return active


# --- Shared helpers -----------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, axes_mm: Sequence[np.ndarray], scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-std random field with features of about ``scale_mm`` on the grid ``axes_mm``.

    A sum of Gaussian bumps on a lattice of pitch ``scale_mm`` with random weights; being
    separable, it costs three small matrix products instead of a full-grid filter.
    """
    bases = []
    for axis in axes_mm:
        nodes = np.arange(axis[0] - 2 * scale_mm, axis[-1] + 2 * scale_mm + scale_mm, scale_mm, dtype=np.float32)
        bases.append(np.exp(-0.5 * ((axis[:, None] - nodes[None, :]) / scale_mm) ** 2).astype(np.float32))
    weights = rng.standard_normal(tuple(b.shape[1] for b in bases), dtype=np.float32)
    field = np.tensordot(bases[0], weights, axes=(1, 0))
    field = np.tensordot(field, bases[1], axes=(1, 1)).transpose(0, 2, 1)
    field = np.tensordot(field, bases[2], axes=(2, 1))
    sample = field[::3, ::3, ::2]
    return ((field - sample.mean()) / max(float(sample.std()), 1e-6)).astype(np.float32)


def _window(axis: np.ndarray, centre_mm: float, reach_mm: float) -> slice:
    """Slice of a sorted axis within ``reach_mm`` of ``centre_mm``, widened by one voxel."""
    start = max(int(np.searchsorted(axis, centre_mm - reach_mm)) - 1, 0)
    stop = min(int(np.searchsorted(axis, centre_mm + reach_mm, side="right")) + 1, len(axis))
    return slice(start, max(stop, start))


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Smallest box holding every True voxel of ``mask``, or None if it has none."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


# --- 1. Normative model -------------------------------------------------------------------------


def misregistered_lookup(
    rng: np.random.Generator,
    labels: np.ndarray,
    tables: Sequence[np.ndarray],
    axes_mm: Sequence[np.ndarray],
    spacing: np.ndarray,
    shift_mm: float,
    warp_mm: float,
) -> list[np.ndarray]:
    """Each table looked up on ``labels`` as a misregistered atlas sees it.

    The atlas is moved by a displacement field d = rigid shift (``shift_mm`` in a random
    direction) + smooth warp (``warp_mm`` std per component): the value at x is that of the
    tissue at x - d. In-plane the nearest voxel is taken (spacing 0.7-1.9 mm); through-plane,
    where slices are 2-6 mm thick, the two neighbouring slices are blended linearly, so the
    shift stays sub-slice instead of snapping to a whole slice.
    """
    direction = _unit_vector(rng)
    shape = labels.shape
    index = []
    for axis in range(3):
        warp = smooth_noise(rng, axes_mm, WARP_SCALE_MM)
        warp *= float(warp_mm / spacing[axis])
        warp += float(shift_mm * direction[axis] / spacing[axis])
        position = np.arange(shape[axis], dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        index.append(np.clip(position - warp, 0.0, shape[axis] - 1.0))
    k_low = np.floor(index[2])
    fraction = index[2] - k_low
    base = (np.rint(index[0]).astype(np.int32) * shape[1] + np.rint(index[1]).astype(np.int32)) * shape[2]
    base += k_low.astype(np.int32)
    flat = labels.ravel()
    low = flat[base]
    high = flat[np.minimum(base + 1, base - k_low.astype(np.int32) + shape[2] - 1)]
    return [table[low] + (table[high] - table[low]) * fraction for table in tables]


def scaled_atlas_error(params: Params, factor: float) -> Params:
    """The normative effect's drawn ``params`` with every error ``factor`` times as large (std scale about 1)."""
    scaled = dict(params)
    for name in ("misregistration_mm", "warp_mm", "regional_bias_z", "global_offset_z"):
        scaled[name] = float(params[name]) * factor
    scaled["std_scale"] = 1.0 + (float(params["std_scale"]) - 1.0) * factor
    return scaled


def normative_bias(
    rng: np.random.Generator, axes_mm: Sequence[np.ndarray], regional_z: float, offset_z: float
) -> np.ndarray:
    """Additive z error of the normative model: smooth regional bias plus a global offset."""
    return (regional_z * smooth_noise(rng, axes_mm, REGIONAL_BIAS_SCALE_MM) + np.float32(offset_z)).astype(np.float32)


def atlas_spread(
    expected: np.ndarray, spread: np.ndarray, spacing: np.ndarray, registration_sd_mm: float, std_scale: float
) -> np.ndarray:
    """The atlas std: the tissue std widened at edges by the population's registration spread,
    times the model's std scale error (see ``ATLAS_REGISTRATION_SD_MM``)."""
    squared = np.zeros_like(expected)
    for axis in range(expected.ndim):
        if expected.shape[axis] < 2:
            continue
        step = np.diff(expected, axis=axis) / np.float32(spacing[axis])
        gradient = np.empty_like(expected)
        moved, moved_step = np.moveaxis(gradient, axis, 0), np.moveaxis(step, axis, 0)
        moved[1:-1] = 0.5 * (moved_step[:-1] + moved_step[1:])
        moved[0], moved[-1] = moved_step[0], moved_step[-1]
        squared += gradient**2
    widened = np.sqrt(spread**2 + squared * np.float32(registration_sd_mm**2))
    return (widened * np.float32(std_scale)).astype(np.float32)


# --- 2. Cerebellum and brainstem -----------------------------------------------------------------


def cerebellum_box(params: Params) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Low and high corners, in reference mm, of a box holding the (deformed) cerebellum."""
    scale = float(params["cerebellum_scale"]) * (1.0 + 2.5 * CEREBELLUM_DEFORMATION)
    low = tuple(c - s * scale for c, s in zip(CEREBELLUM_CENTRE_MM, CEREBELLUM_SEMI_AXES_MM))
    high = tuple(c + s * scale for c, s in zip(CEREBELLUM_CENTRE_MM, CEREBELLUM_SEMI_AXES_MM))
    return low, high


def brainstem_box(params: Params) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Low and high corners, in reference mm, of a box holding the brainstem."""
    reach = float(params["brainstem_radius_mm"]) * (1.0 + PONS_BULGE)
    low = tuple(min(a, b) - reach for a, b in zip(BRAINSTEM_TOP_MM, BRAINSTEM_BOTTOM_MM))
    high = tuple(max(a, b) + reach for a, b in zip(BRAINSTEM_TOP_MM, BRAINSTEM_BOTTOM_MM))
    return low[:2] + (BRAINSTEM_BOTTOM_MM[2],), high[:2] + (BRAINSTEM_TOP_MM[2],)


def hindbrain_box(params: Params) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Low and high corners, in reference mm, of a box holding the cerebellum and brainstem."""
    (low_c, high_c), (low_b, high_b) = cerebellum_box(params), brainstem_box(params)
    return tuple(map(min, low_c, low_b)), tuple(map(max, high_c, high_b))


def cerebellum(
    rng: np.random.Generator, params: Params, reference: Sequence[np.ndarray], axes_mm: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the cerebellum and of its CSF envelope (tentorium, cisterna magna).

    ``reference`` holds brain-frame coordinates in reference mm of the voxels of a box of the
    crop, ``axes_mm`` that box's grid axes. The cerebellum is an ellipsoid deformed by smooth
    noise; the outer ``CEREBELLUM_CSF_SHELL`` of its normalised radius is CSF.
    """
    scale = float(params["cerebellum_scale"])
    squared = np.zeros(reference[0].shape, dtype=np.float32)
    for coordinate, centre, semi in zip(reference, CEREBELLUM_CENTRE_MM, CEREBELLUM_SEMI_AXES_MM):
        squared += ((coordinate - centre) / (semi * scale)) ** 2
    noise = np.clip(smooth_noise(rng, axes_mm, CEREBELLUM_DEFORMATION_SCALE_MM), -2.0, 2.0)
    deformed = np.sqrt(squared) * (1.0 + CEREBELLUM_DEFORMATION * noise)
    inside = deformed < 1.0 - CEREBELLUM_CSF_SHELL
    return inside, (deformed < 1.0) & ~inside


def brainstem(params: Params, reference: Sequence[np.ndarray]) -> np.ndarray:
    """Mask of the brainstem: a tube along BRAINSTEM_TOP_MM -> BRAINSTEM_BOTTOM_MM, wider at the
    pons and tapering at the medulla, starting just below the thalami (``reference`` as above)."""
    x, y, z = reference
    (top_x, top_y, top_z), (bottom_x, bottom_y, bottom_z) = BRAINSTEM_TOP_MM, BRAINSTEM_BOTTOM_MM
    along = (z - top_z) / (bottom_z - top_z)
    bulge = 1.0 + PONS_BULGE * np.exp(-(((z - PONS_CENTRE_MM) / PONS_HALF_HEIGHT_MM) ** 2))
    taper_top, taper_bottom, taper = MEDULLA_TAPER
    thinning = 1.0 - taper * np.clip((z - taper_top) / (taper_bottom - taper_top), 0.0, 1.0)
    radius = float(params["brainstem_radius_mm"]) * bulge * thinning
    distance = (x - (top_x + along * (bottom_x - top_x))) ** 2 + (y - (top_y + along * (bottom_y - top_y))) ** 2
    return (distance < radius**2) & (along >= 0.0) & (along <= 1.0)


def folia_texture(rng: np.random.Generator, contrast: float, axes_mm: Sequence[np.ndarray]) -> np.ndarray:
    """Multiplicative ADC texture of the cerebellar folia (thin grey lamellae and CSF between)."""
    return (1.0 + contrast * np.tanh(smooth_noise(rng, axes_mm, FOLIA_SCALE_MM))).astype(np.float32)


# --- 5. Myelination ------------------------------------------------------------------------------


def internal_capsule_box() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Low and high corners, in reference mm, of a box holding both internal capsules and bands."""
    (cst_low, cst_high, cst_radius), reach = CORTICOSPINAL_MM, max(PLIC_SEMI_AXES_MM)
    half_width = max(PLIC_CENTRE_MM[0] + reach, max(cst_low[0], cst_high[0]) + cst_radius)
    low = (-half_width, min(PLIC_CENTRE_MM[1] - reach, cst_low[1] - cst_radius), PLIC_CENTRE_MM[2] - reach)
    high = (half_width, max(PLIC_CENTRE_MM[1] + reach, cst_high[1] + cst_radius), cst_high[2])
    return low, high


def internal_capsule(reference: Sequence[np.ndarray], corticospinal: bool) -> np.ndarray:
    """Where the myelinated posterior limb of the internal capsule (and the corticospinal band)
    may lie, both sides; the caller keeps its white-matter voxels only (``reference`` as above)."""
    x, y, z = reference
    angle = math.radians(PLIC_ANGLE_DEG)
    cx, cy, cz = PLIC_CENTRE_MM
    sx, sy, sz = PLIC_SEMI_AXES_MM
    inside = np.zeros(x.shape, dtype=bool)
    for side in (1.0, -1.0):
        dx = side * x - cx
        dy = y - cy
        across = dx * math.cos(angle) - dy * math.sin(angle)
        along = dx * math.sin(angle) + dy * math.cos(angle)
        inside |= (across / sx) ** 2 + (along / sy) ** 2 + ((z - cz) / sz) ** 2 < 1.0
        if corticospinal:
            start, stop, radius = CORTICOSPINAL_MM
            t = (z - start[2]) / (stop[2] - start[2])
            ax = start[0] + t * (stop[0] - start[0])
            ay = start[1] + t * (stop[1] - start[1])
            inside |= ((side * x - ax) ** 2 + (y - ay) ** 2 < radius**2) & (t >= 0.0) & (t <= 1.0)
    return inside


def partly_known_mean(tract_adc: float, normative_z: float, tract_std: float, white_matter_adc: float) -> float:
    """Normative mean of a tract the atlas only partly knows, so that the tract reads ``normative_z``."""
    return min(tract_adc - normative_z * tract_std, white_matter_adc)


# --- 3. Low-ADC confounders ----------------------------------------------------------------------


def skull_base_region(normalised: Sequence[np.ndarray], radius: np.ndarray) -> np.ndarray:
    """Cerebral surface near the skull base and sinuses: inferior frontal and inferior temporal."""
    u, v, w = normalised
    near_surface = (radius < 1.0) & (radius > 1.0 - SKULL_BASE_DEPTH)
    frontal = (v < -0.45) & (w < -0.1)
    temporal = (np.abs(u) > 0.5) & (v > -0.45) & (v < 0.2) & (w < -0.25)
    return near_surface & (frontal | temporal)


def paint_blobs(
    rng: np.random.Generator,
    clean: np.ndarray,
    candidates: np.ndarray,
    protect: np.ndarray,
    axes_mm: Sequence[np.ndarray],
    count: int,
    diameter_mm: Ranges,
    adc: Ranges,
    edge: float,
) -> np.ndarray:
    """Blend ``count`` low-ADC ellipsoidal blobs, centred on ``candidates`` voxels, into ``clean``.

    Each blob's ADC goes to its level (drawn from ``adc``) inside and fades back to the tissue's
    over the outer ``edge`` of its radius; ``protect`` voxels (the lesions) are left alone, so a
    confounder never enters the label. Returns the voxels where a blob weighs at least a half.
    """
    painted = np.zeros(clean.shape, dtype=bool)
    pool = np.flatnonzero(candidates)
    if pool.size == 0:
        return painted
    for _ in range(count):
        centre = np.unravel_index(int(pool[rng.integers(pool.size)]), clean.shape)
        aspect = np.exp(rng.normal(0.0, BLOB_ASPECT_SD, size=3))
        radii = 0.5 * draw_from(rng, diameter_mm) * aspect / np.prod(aspect) ** (1.0 / 3.0)
        rotation = _random_rotation(rng)
        level = np.float32(draw_from(rng, adc))
        box = tuple(_window(axis, float(axis[c]), float(radii.max())) for axis, c in zip(axes_mm, centre))
        offsets = [axis[s] - axis[c] for axis, s, c in zip(axes_mm, box, centre)]
        to_blob = (rotation.T / radii[:, None]).astype(np.float32)
        squared = np.zeros(tuple(len(o) for o in offsets), dtype=np.float32)
        for row in to_blob:
            plane = (row[0] * offsets[0])[:, None, None] + (row[1] * offsets[1])[None, :, None]
            squared += (plane + (row[2] * offsets[2])[None, None, :]) ** 2
        weight = np.clip((1.0 - np.sqrt(squared)) / max(edge, 1e-3), 0.0, 1.0).astype(np.float32)
        weight[protect[box]] = 0.0
        clean[box] = clean[box] * (1.0 - weight) + level * weight
        painted[box] |= weight >= 0.5
    return painted


# --- 4. Faint lesions ----------------------------------------------------------------------------


def faint_lesion_adc(
    rng: np.random.Generator,
    z: Ranges,
    normal: np.ndarray,
    std: np.ndarray,
    blob: np.ndarray,
    relative: np.ndarray,
) -> np.ndarray:
    """ADC of pseudo-normalised lesion voxels: normal + target z x normative std, per blob.

    ``normal`` and ``std`` are the voxels' lesion-free ADC and normative std, ``blob`` their blob
    index and ``relative`` their depth in the blob (0 core .. 1 rim).
    """
    targets = np.array([draw_from(rng, z) for _ in range(int(blob.max()) + 1)], dtype=np.float32)
    profile = FAINT_CORE_FACTOR + (FAINT_RIM_FACTOR - FAINT_CORE_FACTOR) * relative
    return np.maximum(normal + targets[blob] * std * profile, 1.0).astype(np.float32)


def mild_lesion_adc(
    rng: np.random.Generator,
    settings: MildLesions,
    adc: np.ndarray,
    normal: np.ndarray,
    blob: np.ndarray,
    relative: np.ndarray,
) -> np.ndarray:
    """Lesion voxels' ADC with some blobs' absolute level replaced by a fraction of the tissue's normal ADC.

    ``adc`` is the basic lesion ADC, ``normal`` the voxels' lesion-free ADC, ``blob`` their blob index
    and ``relative`` their depth in the blob (0 core .. 1 rim).
    """
    blobs = int(blob.max()) + 1
    mild = rng.random(blobs) < settings.blob_probability
    ratios = np.array([draw_from(rng, settings.ratio) for _ in range(blobs)], dtype=np.float32)
    relative_adc = normal * ratios[blob] * (MILD_CORE_FACTOR + (MILD_RIM_FACTOR - MILD_CORE_FACTOR) * relative)
    return np.where(mild[blob], relative_adc, adc).astype(np.float32)


# --- 7. Imperfect skull stripping ----------------------------------------------------------------


def leftover_rim(
    rng: np.random.Generator,
    params: Params,
    adc_range: Interval,
    radius: np.ndarray,
    normalised: Sequence[np.ndarray],
    semi_axes: np.ndarray,
    outside: np.ndarray,
    axes_mm: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of a leftover shell over a sector just outside the brain, and their ADC.

    The shell is ``thickness_mm`` (about: measured along the brain's normalised radius) deep over
    the cone of ``sector_half_angle_deg`` around the drawn direction, on ``outside`` voxels only.
    Its ADC varies smoothly over ``adc_range``.
    """
    thickness = float(params["thickness_mm"]) / float(np.exp(np.mean(np.log(semi_axes))))
    shell = outside & (radius >= 1.0) & (radius < 1.0 + thickness)
    direction = np.array([params["direction_x"], params["direction_y"], params["direction_z"]], dtype=np.float32)
    x, y, z = (c * np.float32(a) for c, a in zip(normalised, semi_axes))
    cosine = (x * direction[0] + y * direction[1] + z * direction[2]) / np.maximum(np.sqrt(x**2 + y**2 + z**2), 1e-3)
    rim = shell & (cosine >= math.cos(math.radians(float(params["sector_half_angle_deg"]))))
    values = np.zeros(0, dtype=np.float32)
    box = bounding_box(rim)
    if box is not None:
        noise = smooth_noise(rng, [axis[s] for axis, s in zip(axes_mm, box)], RIM_TEXTURE_SCALE_MM)
        low, high = adc_range
        field = low + (high - low) * 0.5 * (1.0 + np.tanh(noise))
        values = field[rim[box]].astype(np.float32)
    return rim, values


def cut_cap(params: Params, normalised: Sequence[np.ndarray], semi_axes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Brain voxels of the cap, ``depth_mm`` deep, cut off the top (superior) or the front (anterior)."""
    u, v, w = normalised
    height = w * np.float32(semi_axes[2]) if params["side"] == "top" else -v * np.float32(semi_axes[1])
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    extreme = float(height[mask].max())
    return mask & (height > extreme - float(params["depth_mm"]))


# --- 8. Motion and ghosting ----------------------------------------------------------------------


def interleaved_offsets(params: Params, spacing: np.ndarray) -> tuple[int, int]:
    """The odd slices' in-plane shift in whole voxels (at least one voxel along some axis)."""
    dx = params["shift_x_mm"] / spacing[0]
    dy = params["shift_y_mm"] / spacing[1]
    shift = [int(round(dx)), int(round(dy))]
    if shift == [0, 0]:
        larger = 0 if abs(dx) >= abs(dy) else 1
        shift[larger] = 1 if (dx, dy)[larger] >= 0 else -1
    return shift[0], shift[1]


def shift_interleaved(array: np.ndarray, odd: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``array`` with its ``odd`` slices (boolean per z) moved by (dx, dy) voxels, zero-filled."""
    moved = array.copy()
    part = array[:, :, odd]
    shifted = np.zeros_like(part)
    nx, ny = part.shape[:2]
    src_x = slice(max(-dx, 0), nx - max(dx, 0))
    dst_x = slice(max(dx, 0), nx - max(-dx, 0))
    src_y = slice(max(-dy, 0), ny - max(dy, 0))
    dst_y = slice(max(dy, 0), ny - max(-dy, 0))
    shifted[dst_x, dst_y] = part[src_x, src_y]
    moved[:, :, odd] = shifted
    return moved


def slice_factors(rng: np.random.Generator, amplitude: float, n_slices: int) -> np.ndarray:
    """Per-slice intensity factors, uniform in 1 +/- ``amplitude``."""
    return (1.0 + rng.uniform(-amplitude, amplitude, size=n_slices)).astype(np.float32)


def head_signal(adc: np.ndarray, mask: np.ndarray, radius: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """The acquired head's signal, as the ghost sees it: ``adc`` in the brain, the scalp level in
    a ``GHOST_HEAD_MARGIN_MM`` shell around the cerebrum (``radius`` its normalised radius)."""
    margin = GHOST_HEAD_MARGIN_MM / float(np.exp(np.mean(np.log(semi_axes))))
    scalp = ~mask & (radius < 1.0 + margin)
    return np.where(scalp, np.float32(GHOST_SCALP_LEVEL), np.where(mask, adc, np.float32(0.0))).astype(np.float32)


def add_ghost(
    adc: np.ndarray, source: np.ndarray, mask: np.ndarray, axis: int, start: int, n_grid: int, amplitude: float
) -> np.ndarray:
    """``adc`` plus ``amplitude`` times ``source`` shifted by half the grid's field of view along
    ``axis``, inside ``mask``. The crop starts at grid index ``start`` of a grid of ``n_grid``
    voxels along that axis; what the shift brings in from outside the crop is background (0)."""
    shape = list(source.shape)
    shape[axis] = n_grid
    full = np.zeros(shape, dtype=np.float32)
    index = [slice(None)] * source.ndim
    index[axis] = slice(start, start + source.shape[axis])
    full[tuple(index)] = source
    ghost = np.roll(full, n_grid // 2, axis=axis)[tuple(index)]
    return np.where(mask, adc + np.float32(amplitude) * ghost, np.float32(0.0)).astype(np.float32)


def describe(profile: RealismProfile) -> list[str]:
    """One line per effect: its probability and ranges (for --help and logs)."""
    lines = []
    for name in EFFECTS:
        settings = getattr(profile, name)
        fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "probability"}
        shown = ", ".join(f"{key}={_format(value)}" for key, value in fields.items())
        lines.append(f"{name}: p={settings.probability:g}" + (f", {shown}" if shown else ""))
    return lines


def _format(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return " or ".join(f"{low:g}..{high:g}" for low, high in value)
    if isinstance(value, tuple):
        return "..".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)

