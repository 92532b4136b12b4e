"""The BONBID-HIE challenge metrics of one case, in millimetres on the native grid.

Definitions follow the official evaluation script (``bonbidhie_eval/evaluation.py`` of
baorina/BONBID-HIE-MICCAI2023, itself built on DeepMind's ``surface-distance``):

* **Surface.** A mask's surface is made of marching-cubes surface elements: every 2x2x2
  block of voxels that is neither all inside nor all outside holds one element, placed at
  the corner its eight voxels share and weighted by its area in mm² (which depends on the
  spacing). Distances are Euclidean, in mm, between element positions.
* **Directed mean distance** A→B: the area-weighted mean, over A's surface elements, of the
  distance to the nearest surface element of B.
* **MASD** = (mean distance prediction→truth + mean distance truth→prediction) / 2.
* **NSD** at tolerance τ mm = (area of the prediction's surface lying within τ of the
  truth's surface + area of the truth's surface lying within τ of the prediction's
  surface) / (total area of both surfaces); a distance equal to τ counts as within.

Why not ``monai.metrics.compute_average_surface_distance(symmetric=True)``: MONAI
concatenates the distances of both directions and takes one unweighted mean over the
union of the two surfaces' voxels (surface = mask XOR its erosion), so the larger surface
weighs more and element areas are ignored. That is neither the mean of the two directed
means nor area weighted; on random test blobs it read 25-80 % higher than the official
MASD. This module therefore takes distances and element areas from MONAI's
``get_edge_surface_distance(use_subvoxels=True)`` (DeepMind's element table and
neighbourhood code) and forms the two directed weighted means itself. The NSD computed
from the same distances equals ``monai.metrics.compute_surface_dice(use_subvoxels=True)``
with the spacing given, whose threshold is then in mm (the test suite checks both).

Empty masks, where a surface distance does not exist:

* truth and prediction both empty: Dice 1, NSD 1, MASD 0 (a perfect answer);
* exactly one empty: Dice 0, NSD 0, MASD = :func:`distance_cap_mm`, the diagonal of the
  image's physical extent (the largest distance two points of the image can have), so
  means stay finite and such a case scores at least as badly as any real prediction.
  The official script gives NaN there, which its mean then skips; :func:`summarize`
  counts these cases so the two conventions can be told apart.

One difference from the official script: it pairs SimpleITK's (x, y, z) spacing with a
(z, y, x) array, whereas here each axis gets its own spacing; on grids whose x and z
spacings differ, MASD and NSD therefore differ from the leaderboard's.

``compat="bonbid2023"`` reproduces the 2023 challenge's scoring instead (the script as of
commit e9d4a22 of 14 October 2023, which scored the 2023 leaderboard), quirks included:

* the surface distances and element areas are computed with the (x, y, z) spacing paired
  with the (z, y, x) array, i.e. axis x gets the z spacing and axis z the x spacing (here, on
  (x, y, z) arrays: the spacing reversed);
* exactly one empty mask gives MASD NaN (Dice 0, NSD 0), which :func:`summarize` leaves out of
  the MASD statistics as the official mean (pandas) does;
* NSD is at 2 mm, whatever tolerance is asked for elsewhere.

The prediction taking the truth's geometry is the file reader's part
(:mod:`hieseg.evaluation.folders`). The script was changed on 3 September 2024 to pass
``[z, x, y]`` spacing, which swaps only x and y; that later version is not reproduced.

Burden: lesion fraction = truth lesion volume / brain volume, with the brain taken as the
voxels > 0 of the skull-stripped ADC image; groups "<1%", "1-5%" (both ends included),
">5%", or "unknown" when no brain mask was given.

A case may also carry its resampling ceiling (:mod:`hieseg.evaluation.ceiling`): the Dice the truth
itself keeps after a round trip through a network grid, the best any model predicting on
that grid can reach. It is not a score of the prediction and is left ``None`` unless asked for.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

from hieseg.data.burden import BURDEN_GROUPS, UNKNOWN_GROUP, burden_group
from hieseg.errors import InputError
from hieseg.evaluation.lesions import lesion_counts, pooled
from hieseg.io.images import MM3_PER_ML, plain_numbers

DEFAULT_NSD_TOLERANCE_MM = 2.0
"""Tolerance of the official NSD."""
BONBID2023 = "bonbid2023"
"""The 2023 challenge evaluation's conventions (see the module docstring)."""
COMPAT_MODES = (BONBID2023,)
SUMMARY_METRICS = ("dice", "masd_mm", "nsd")
CEILING_METRIC = "ceiling_dice"
"""Summarized beside SUMMARY_METRICS when every case carries it."""
METRIC_TITLES = {"dice": "Dice", "masd_mm": "MASD (mm)", "nsd": "NSD", CEILING_METRIC: "ceiling Dice"}
"""How each per-case metric is named in tables and plots."""
HIGHER_IS_BETTER = {"dice": True, "masd_mm": False, "nsd": True}
LESION_WISE = "lesion_wise"
"""Key, in each group's statistics, of the pooled lesion-wise counts and rates (:func:`hieseg.evaluation.lesions.pooled`)."""
"""Which way each challenge metric improves: Dice and NSD up, MASD down."""


@dataclass
class CaseMetrics:
    """Scores and volumes of one case; volumes in ml, MASD in mm, burden as a fraction."""

    case_id: str
    dice: float
    masd_mm: float
    nsd: float
    truth_ml: float
    pred_ml: float
    brain_ml: float
    burden_fraction: float
    burden_group: str
    ceiling_dice: float | None = None
    """Resampling ceiling of the truth on the model's grid (:mod:`hieseg.evaluation.ceiling`), when computed."""
    truth_lesions: int | None = None
    """Lesion-wise counts (:mod:`hieseg.evaluation.lesions`); ``None`` in scores written before they existed."""
    found_lesions: int | None = None
    pred_lesions: int | None = None
    true_pred_lesions: int | None = None
    missed_lt10_mm3: int | None = None
    missed_10_100_mm3: int | None = None
    missed_100_1000_mm3: int | None = None
    missed_ge1000_mm3: int | None = None
    conspicuous_lesions: int | None = None
    """Truth lesions of at least 3 voxels with median Z_ADC <= -3; ``None`` when the Z_ADC was not given."""
    conspicuous_found: int | None = None


@dataclass(frozen=True)
class DirectedDistances:
    """Distances (mm) from each surface element of one mask to the other's surface, with element areas (mm²)."""

    distances: np.ndarray
    areas: np.ndarray

    def weighted_mean(self) -> float:
        return float(np.sum(self.distances * self.areas) / np.sum(self.areas))

    def area_within(self, tolerance_mm: float) -> float:
        return float(np.sum(self.areas[self.distances <= tolerance_mm]))

    def total_area(self) -> float:
        return float(np.sum(self.areas))


def score_case(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, float, float],
    brain: np.ndarray | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    case_id: str = "",
    compat: str | None = None,
    zadc: np.ndarray | None = None,
) -> CaseMetrics:
    """Score one binary prediction against its truth; arrays ordered (x, y, z), spacing in mm (x, y, z).

    ``compat`` (one of ``COMPAT_MODES``) scores the way an official evaluation did, quirks included.
    With the case's ``zadc`` (same axes), the lesion-wise counts include the conspicuous lesions.
    """
    pred = _as_mask(pred, "prediction")
    truth = _as_mask(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    spacing = checked_spacing(spacing)
    check_compat(compat, nsd_tolerance_mm)
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise InputError(f"NSD tolerance must be a finite number >= 0 mm, got {nsd_tolerance_mm}")
    masd_mm, nsd = surface_scores(pred, truth, spacing, nsd_tolerance_mm, compat)
    voxel_ml = float(np.prod(spacing)) / MM3_PER_ML
    truth_voxels = int(truth.sum())
    brain_voxels = _brain_voxels(brain, truth.shape)
    # The fraction is a ratio of voxel counts, so a case exactly on a group boundary stays on it.
    fraction = truth_voxels / brain_voxels if brain_voxels else math.nan
    return CaseMetrics(
        case_id=case_id,
        dice=dice_score(pred, truth),
        masd_mm=masd_mm,
        nsd=nsd,
        truth_ml=truth_voxels * voxel_ml,
        pred_ml=int(pred.sum()) * voxel_ml,
        brain_ml=brain_voxels * voxel_ml if brain_voxels is not None else math.nan,
        burden_fraction=fraction,
        burden_group=burden_group(fraction),
        **dataclasses.asdict(lesion_counts(pred, truth, spacing, zadc)),
    )


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Volumetric Dice of two boolean masks; 1 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def check_compat(compat: str | None, nsd_tolerance_mm: float) -> None:
    """Refuse an unknown compatibility mode, or an NSD tolerance that the mode fixes otherwise."""
    if compat is None:
        return
    if compat not in COMPAT_MODES:
        raise InputError(f"unknown scoring compatibility {compat!r}; choose one of {', '.join(COMPAT_MODES)}")
    if nsd_tolerance_mm != DEFAULT_NSD_TOLERANCE_MM:
        raise InputError(f"compatibility {compat} scores NSD at {DEFAULT_NSD_TOLERANCE_MM:g} mm, as the official "
                         f"script does; an NSD tolerance of {nsd_tolerance_mm:g} mm cannot be combined with it")


def surface_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, float, float],
    nsd_tolerance_mm: float,
    compat: str | None = None,
) -> tuple[float, float]:
    """MASD (mm) and NSD of two boolean masks, applying the empty-mask rule of the module docstring.

    With ``compat="bonbid2023"`` a single empty mask gives MASD NaN and the spacing is paired with
    the axes in reverse, as the 2023 official script paired them.
    """
    pred_empty, truth_empty = not pred.any(), not truth.any()
    if pred_empty and truth_empty:
        return 0.0, 1.0
    if pred_empty or truth_empty:
        return (math.nan if compat == BONBID2023 else distance_cap_mm(truth.shape, spacing)), 0.0
    if compat == BONBID2023:
        spacing = (spacing[2], spacing[1], spacing[0])
    pred_to_truth, truth_to_pred = directed_distances(pred, truth, spacing)
    masd = (pred_to_truth.weighted_mean() + truth_to_pred.weighted_mean()) / 2.0
    within = pred_to_truth.area_within(nsd_tolerance_mm) + truth_to_pred.area_within(nsd_tolerance_mm)
    nsd = within / (pred_to_truth.total_area() + truth_to_pred.total_area())
    return masd, nsd


def directed_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[DirectedDistances, DirectedDistances]:
    """Prediction→truth and truth→prediction surface distances with element areas, via MONAI.

    Both masks must be non-empty.
    """
    with warnings.catch_warnings():
        # MONAI 1.6 passes a deprecated argument to itself inside this call; nothing to act on here.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        (edges_pred, edges_truth), (pred_to_truth, truth_to_pred), (areas_pred, areas_truth) = (
            get_edge_surface_distance(
                torch.from_numpy(pred),
                torch.from_numpy(truth),
                distance_metric="euclidean",
                spacing=spacing,
                use_subvoxels=True,
                symmetric=True,
            )
        )
    return (
        DirectedDistances(_float64(pred_to_truth), _float64(areas_pred[edges_pred])),
        DirectedDistances(_float64(truth_to_pred), _float64(areas_truth[edges_truth])),
    )


def distance_cap_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """MASD given when exactly one mask is empty: the diagonal of the image extent in mm."""
    return float(np.linalg.norm(np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)))


def summarize(rows: list[CaseMetrics]) -> dict:
    """Mean, population std and median of Dice, MASD and NSD, overall and per burden group, with counts.

    A NaN value (the MASD of a single empty mask under ``compat="bonbid2023"``) is left out of
    its metric's statistics, as the official mean leaves it out.

    The three burden groups are always listed (statistics ``None`` when a group has no
    case); "unknown" is listed only when some case has it. ``n_one_empty`` counts the cases
    scored by the one-empty-mask rule, whose MASD is the capped value. The resampling
    ceiling is summarized too (key ``ceiling_dice``) when every case carries one, and the lesion-wise counts
    and rates, pooled over the group's cases (key ``lesion_wise``), when every case carries them.
    """
    groups = list(BURDEN_GROUPS)
    if any(row.burden_group == UNKNOWN_GROUP for row in rows):
        groups.append(UNKNOWN_GROUP)
    metrics = summary_metrics(rows)
    return {
        "n_cases": len(rows),
        "n_one_empty": sum(1 for row in rows if (row.truth_ml == 0) != (row.pred_ml == 0)),
        "overall": _group_statistics(rows, metrics),
        "by_burden": {
            group: _group_statistics([r for r in rows if r.burden_group == group], metrics) for group in groups
        },
    }


def official_mean_masd(rows: list[CaseMetrics]) -> dict:
    """Mean MASD the official script's way: over the cases whose masks are both non-empty, with their count.

    The official script's MASD is NaN when either mask is empty, and its mean skips NaN, so an
    empty prediction drops out of its average instead of counting against it. ``mean`` is
    ``None`` when no case has two non-empty masks.
    """
    values = [row.masd_mm for row in rows if row.truth_ml > 0 and row.pred_ml > 0]
    return {"mean": float(np.mean(values)) if values else None, "n": len(values)}


def summary_metrics(rows: list[CaseMetrics]) -> tuple[str, ...]:
    """The metrics :func:`summarize` reports for these rows: SUMMARY_METRICS, plus the ceiling if all have one."""
    has_ceiling = bool(rows) and all(row.ceiling_dice is not None for row in rows)
    return SUMMARY_METRICS + ((CEILING_METRIC,) if has_ceiling else ())


def _group_statistics(rows: list[CaseMetrics], metrics: tuple[str, ...]) -> dict:
    statistics: dict = {"n": len(rows)}
    if rows and all(row.truth_lesions is not None for row in rows):
        statistics[LESION_WISE] = pooled(dataclasses.asdict(row) for row in rows)
    for name in metrics:
        values = np.array([getattr(row, name) for row in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        statistics[name] = (
            {"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values))}
            if len(values)
            else None
        )
    return statistics


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Boolean copy of a 3D 0/1 array; anything else (e.g. a probability map) is refused."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be a 3D array, got shape {array.shape}")
    if array.dtype != bool and np.logical_and(array != 0, array != 1).any():
        raise ValueError(f"{name} must be binary 0/1, found values {np.unique(array)[:8].tolist()}")
    return np.ascontiguousarray(array != 0)


def _brain_voxels(brain: np.ndarray | None, shape: tuple[int, ...]) -> int | None:
    """Voxel count of the brain mask, or ``None`` when no mask was given."""
    if brain is None:
        return None
    brain = _as_mask(brain, "brain")
    if brain.shape != shape:
        raise ValueError(f"brain shape {brain.shape} differs from truth shape {shape}")
    return int(brain.sum())


def checked_spacing(spacing: tuple[float, ...]) -> tuple[float, float, float]:
    """The spacing as three floats, or :class:`InputError` unless they are three positive finite numbers."""
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"spacing must be three positive finite numbers (mm), got {plain_numbers(values)}")
    return values  # type: ignore[return-value]


def _float64(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy().astype(np.float64)
