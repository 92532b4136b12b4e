"""Tests of the challenge metrics: hand-computed cases and an independent scipy reference."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_surface_dice
from monai.metrics.utils import create_table_neighbour_code_to_surface_area
from scipy import ndimage

from hieseg.data.burden import BURDEN_GROUPS, UNKNOWN_GROUP, burden_group
from hieseg.evaluation.metrics import (
    BONBID2023,
    CEILING_METRIC,
    CaseMetrics,
    distance_cap_mm,
    official_mean_masd,
    score_case,
    summarize,
)

ANISOTROPIC = (0.8, 0.8, 4.0)
NEIGHBOUR_WEIGHTS = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
"""Bit of each voxel of a 2x2x2 block in the neighbourhood code (DeepMind's ordering)."""


def box(shape: tuple[int, int, int], corner: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return mask


def sphere(shape: tuple[int, int, int], spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    squared = sum(((grid[i] - (shape[i] - 1) / 2) * spacing[i]) ** 2 for i in range(3))
    return squared <= radius_mm**2


def reference_directed(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface element of ``a`` to ``b``'s surface, and the elements' areas.

    An implementation independent of MONAI's except for the area-per-code table: the code
    of every voxel corner is built from its 2x2x2 block on a zero-padded grid (no
    cropping), and distances come from scipy's exact Euclidean distance transform rather
    than MONAI's KD-tree.
    """
    table = create_table_neighbour_code_to_surface_area(spacing)[0].numpy().astype(np.float64)

    def codes(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask.astype(np.int64), 1)
        n0, n1, n2 = (n - 1 for n in padded.shape)
        return sum(
            NEIGHBOUR_WEIGHTS[i, j, k] * padded[i : i + n0, j : j + n1, k : k + n2]
            for i in range(2)
            for j in range(2)
            for k in range(2)
        )

    code_a, code_b = codes(a), codes(b)
    surface_a = (code_a != 0) & (code_a != 255)
    surface_b = (code_b != 0) & (code_b != 255)
    distance_to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)
    return distance_to_b[surface_a], table[code_a[surface_a]]


def reference_scores(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], tolerance: float
) -> tuple[float, float]:
    """MASD and NSD by the official definition, from :func:`reference_directed`."""
    d_pt, a_p = reference_directed(pred, truth, spacing)
    d_tp, a_t = reference_directed(truth, pred, spacing)
    masd = (np.sum(d_pt * a_p) / np.sum(a_p) + np.sum(d_tp * a_t) / np.sum(a_t)) / 2
    nsd = (np.sum(a_p[d_pt <= tolerance]) + np.sum(a_t[d_tp <= tolerance])) / (np.sum(a_p) + np.sum(a_t))
    return float(masd), float(nsd)


def random_blobs(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.53


# --- hand-computed values -------------------------------------------------------------


def test_identical_masks_are_perfect() -> None:
    cube = box((16, 16, 8), (4, 4, 2), (6, 6, 3))
    result = score_case(cube, cube, ANISOTROPIC)
    assert (result.dice, result.masd_mm, result.nsd) == (1.0, 0.0, 1.0)


@pytest.mark.parametrize("shift", [1, 3])
def test_dice_of_shifted_cubes_by_counting(shift: int) -> None:
    # Overlap of two 10-voxel cubes offset by `shift` along y is 10 * (10 - shift) * 10 voxels.
    truth = box((20, 20, 14), (5, 4, 2), (10, 10, 10))
    pred = box((20, 20, 14), (5, 4 + shift, 2), (10, 10, 10))
    assert score_case(pred, truth, (1.0, 1.0, 1.0)).dice == pytest.approx((10 - shift) / 10, abs=1e-12)


def test_masd_scales_with_the_spacing_of_the_shift_axis() -> None:
    """A one-voxel-thick plate moved by one voxel across its thickness.

    Its surface elements sit on the two planes bounding the plate, with equal areas by
    mirror symmetry. After the move, one plane of each plate coincides with a plane of the
    other (distance 0) and the other plane lies one voxel away (distance = that axis's
    spacing), so each directed mean, and MASD, is exactly half the spacing: 4.0 / 2 along
    z and 0.8 / 2 along x, a ratio of 5.
    """
    flat_in_z = box((14, 14, 6), (3, 3, 2), (8, 8, 1))
    flat_in_x = box((6, 14, 14), (2, 3, 3), (1, 8, 8))
    along_z = score_case(np.roll(flat_in_z, 1, axis=2), flat_in_z, ANISOTROPIC)
    along_x = score_case(np.roll(flat_in_x, 1, axis=0), flat_in_x, ANISOTROPIC)
    assert along_z.masd_mm == pytest.approx(2.0, abs=1e-6)
    assert along_x.masd_mm == pytest.approx(0.4, abs=1e-6)
    assert along_z.dice == along_x.dice == 0.0


def test_nsd_below_and_above_a_known_shift() -> None:
    """The plate moved by 4 mm: half its surface is at 0 mm, half at exactly 4 mm."""
    plate = box((14, 14, 6), (3, 3, 2), (8, 8, 1))
    moved = np.roll(plate, 1, axis=2)
    assert score_case(moved, plate, ANISOTROPIC, nsd_tolerance_mm=3.9).nsd == pytest.approx(0.5, abs=1e-6)
    assert score_case(moved, plate, ANISOTROPIC, nsd_tolerance_mm=4.1).nsd == 1.0


def test_nsd_of_a_cube_inside_a_grown_cube() -> None:
    """A cube grown by 2 voxels on every side: every surface distance lies in [2, 2*sqrt(3)] mm."""
    inner = box((20, 20, 20), (6, 6, 6), (8, 8, 8))
    outer = box((20, 20, 20), (4, 4, 4), (12, 12, 12))
    spacing = (1.0, 1.0, 1.0)
    assert score_case(inner, outer, spacing, nsd_tolerance_mm=1.9).nsd == 0.0
    assert score_case(inner, outer, spacing, nsd_tolerance_mm=2 * math.sqrt(3) + 1e-3).nsd == 1.0
    assert 2.0 <= score_case(inner, outer, spacing).masd_mm <= 2 * math.sqrt(3)


@pytest.mark.parametrize(
    ("spacing", "shape"),
    [((1.0, 1.0, 1.0), (32, 32, 32)), ((0.7, 0.7, 1.5), (40, 40, 20)), ((0.5, 0.5, 2.0), (50, 50, 14))],
)
def test_concentric_spheres_are_the_radius_difference_apart(spacing, shape) -> None:
    """Spheres of radius 6 and 9 mm: MASD ~ 3 mm.

    Each surface element lies within half a voxel diagonal h of its ideal sphere, so MASD
    must lie within h of 3 mm; staircase corners reach out toward the other surface, which
    biases it low (2.49-2.59 mm for these grids).
    """
    half_diagonal = math.hypot(*spacing) / 2
    result = score_case(sphere(shape, spacing, 6.0), sphere(shape, spacing, 9.0), spacing)
    assert 3.0 - half_diagonal < result.masd_mm < 3.0
    assert result.dice == pytest.approx(2 * 6**3 / (6**3 + 9**3), abs=0.02)


# --- agreement with the independent reference -----------------------------------------


@pytest.mark.parametrize("spacing", [(0.8, 1.1, 4.0), (0.45, 0.45, 3.0)])
def test_agrees_with_scipy_reference_on_random_blobs(spacing) -> None:
    """Same surface definition on both sides, so only float32 rounding in MONAI separates them.

    MONAI returns distances and areas as float32 (relative error ~6e-8 each); summed in
    float64 that keeps results within ~1e-6 relative, hence the 1e-5 tolerance.
    """
    rng = np.random.default_rng(7)
    for _ in range(3):
        truth = random_blobs(rng, (30, 26, 12))
        pred = random_blobs(rng, (30, 26, 12)) | (truth & (rng.random(truth.shape) > 0.4))
        expected_masd, expected_nsd = reference_scores(pred, truth, spacing, 2.0)
        result = score_case(pred, truth, spacing)
        assert result.masd_mm == pytest.approx(expected_masd, rel=1e-5)
        assert result.nsd == pytest.approx(expected_nsd, rel=1e-5)


def test_agrees_with_reference_when_masks_touch_the_image_border() -> None:
    truth = box((12, 12, 6), (0, 0, 0), (7, 12, 3))
    pred = box((12, 12, 6), (2, 0, 0), (10, 9, 6))
    expected_masd, expected_nsd = reference_scores(pred, truth, ANISOTROPIC, 2.0)
    result = score_case(pred, truth, ANISOTROPIC)
    assert result.masd_mm == pytest.approx(expected_masd, rel=1e-5)
    assert result.nsd == pytest.approx(expected_nsd, rel=1e-5)


def test_nsd_equals_monai_compute_surface_dice() -> None:
    rng = np.random.default_rng(3)
    truth = random_blobs(rng, (30, 26, 12))
    pred = random_blobs(rng, (30, 26, 12))
    spacing = (0.8, 1.1, 4.0)
    monai_nsd = compute_surface_dice(
        torch.from_numpy(pred)[None, None],
        torch.from_numpy(truth)[None, None],
        class_thresholds=[3.0],
        include_background=True,
        spacing=spacing,
        use_subvoxels=True,
    )
    assert score_case(pred, truth, spacing, nsd_tolerance_mm=3.0).nsd == pytest.approx(float(monai_nsd), rel=1e-5)


def test_surface_element_areas_follow_the_spacing_of_each_axis() -> None:
    """A flat face normal to axis i has area equal to the product of the other two spacings.

    This pins the one piece the reference shares with MONAI: codes 15, 51 and 85 are the
    blocks whose inside half lies across axis 0, 1 and 2.
    """
    spacing = (0.8, 1.1, 4.0)
    table = create_table_neighbour_code_to_surface_area(spacing)[0].numpy()
    assert table[15] == pytest.approx(1.1 * 4.0, rel=1e-6)
    assert table[51] == pytest.approx(0.8 * 4.0, rel=1e-6)
    assert table[85] == pytest.approx(0.8 * 1.1, rel=1e-6)


# --- empty masks, volumes and burden --------------------------------------------------


def test_both_empty_is_perfect() -> None:
    empty = np.zeros((8, 8, 4), dtype=bool)
    result = score_case(empty, empty, ANISOTROPIC)
    assert (result.dice, result.masd_mm, result.nsd) == (1.0, 0.0, 1.0)


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_one_empty_scores_zero_and_capped_distance(empty_side: str) -> None:
    shape, spacing = (10, 20, 5), (1.0, 0.5, 4.0)
    lesion, empty = box(shape, (2, 2, 1), (3, 3, 2)), np.zeros(shape, dtype=bool)
    pred, truth = (empty, lesion) if empty_side == "pred" else (lesion, empty)
    result = score_case(pred, truth, spacing)
    assert (result.dice, result.nsd) == (0.0, 0.0)
    assert result.masd_mm == pytest.approx(math.sqrt(10**2 + 10**2 + 20**2))
    assert distance_cap_mm(shape, spacing) == pytest.approx(math.sqrt(600))


def test_volumes_in_ml_and_burden_fraction() -> None:
    spacing = (0.5, 0.5, 2.0)  # 0.5 mm3 per voxel
    truth = box((20, 20, 10), (0, 0, 0), (10, 10, 1))  # 100 voxels = 0.05 ml
    pred = box((20, 20, 10), (0, 0, 0), (10, 10, 2))  # 200 voxels = 0.1 ml
    brain = box((20, 20, 10), (0, 0, 0), (20, 10, 5))  # 1000 voxels = 0.5 ml
    result = score_case(pred, truth, spacing, brain=brain, case_id="case7")
    assert result.case_id == "case7"
    assert (result.truth_ml, result.pred_ml, result.brain_ml) == pytest.approx((0.05, 0.1, 0.5))
    assert result.burden_fraction == pytest.approx(0.1)
    assert result.burden_group == ">5%"


def test_burden_fraction_on_a_group_boundary_is_exact() -> None:
    truth = box((20, 20, 10), (0, 0, 0), (10, 1, 1))  # 10 voxels
    brain = box((20, 20, 10), (0, 0, 0), (10, 20, 5))  # 1000 voxels
    result = score_case(truth, truth, (0.9, 0.9, 3.3), brain=brain)
    assert result.burden_fraction == 0.01
    assert result.burden_group == "1-5%"


def test_without_brain_the_burden_is_unknown() -> None:
    cube = box((8, 8, 4), (2, 2, 1), (2, 2, 2))
    result = score_case(cube, cube, ANISOTROPIC)
    assert math.isnan(result.brain_ml) and math.isnan(result.burden_fraction)
    assert result.burden_group == UNKNOWN_GROUP


@pytest.mark.parametrize(
    ("fraction", "group"),
    [
        (0.0, "<1%"),
        (0.0099999, "<1%"),
        (0.01, "1-5%"),
        (0.03, "1-5%"),
        (0.05, "1-5%"),
        (0.0500001, ">5%"),
        (0.4, ">5%"),
        (math.nan, UNKNOWN_GROUP),
    ],
)
def test_burden_group_boundaries(fraction: float, group: str) -> None:
    assert burden_group(fraction) == group


def test_rejects_non_binary_and_mismatched_inputs() -> None:
    probabilities = np.full((4, 4, 4), 0.7)
    mask = np.ones((4, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="binary"):
        score_case(probabilities, mask, ANISOTROPIC)
    with pytest.raises(ValueError, match="shape"):
        score_case(mask, np.ones((4, 4, 5), dtype=bool), ANISOTROPIC)
    with pytest.raises(ValueError, match="spacing"):
        score_case(mask, mask, (1.0, 0.0, 1.0))


# --- summary --------------------------------------------------------------------------


def row(case_id: str, dice: float, masd: float, nsd: float, group: str, pred_ml: float = 1.0) -> CaseMetrics:
    return CaseMetrics(case_id, dice, masd, nsd, 1.0, pred_ml, 100.0, 0.0, group)


def test_summarize_overall_and_per_group() -> None:
    rows = [
        row("a", 0.2, 4.0, 0.3, "<1%"),
        row("b", 0.6, 2.0, 0.7, "<1%"),
        row("c", 1.0, 0.0, 1.0, ">5%"),
        row("d", 0.0, 50.0, 0.0, ">5%", pred_ml=0.0),
    ]
    summary = summarize(rows)
    assert summary["n_cases"] == 4
    assert summary["n_one_empty"] == 1
    overall = summary["overall"]
    assert overall["n"] == 4
    assert overall["dice"]["mean"] == pytest.approx(0.45)
    assert overall["dice"]["median"] == pytest.approx(0.4)
    assert overall["dice"]["std"] == pytest.approx(np.std([0.2, 0.6, 1.0, 0.0]))
    assert overall["masd_mm"]["mean"] == pytest.approx(14.0)
    small = summary["by_burden"]["<1%"]
    assert small["n"] == 2 and small["nsd"]["mean"] == pytest.approx(0.5)
    assert summary["by_burden"]["1-5%"] == {"n": 0, "dice": None, "masd_mm": None, "nsd": None}
    assert list(summary["by_burden"]) == list(BURDEN_GROUPS)


def test_summarize_lists_unknown_only_when_present() -> None:
    summary = summarize([row("a", 0.5, 1.0, 0.5, UNKNOWN_GROUP)])
    assert summary["by_burden"][UNKNOWN_GROUP]["n"] == 1
    assert summary["by_burden"]["<1%"]["n"] == 0


def test_summarize_reports_the_ceiling_only_when_every_case_has_one() -> None:
    rows = [row("a", 0.2, 4.0, 0.3, "<1%"), row("b", 0.6, 2.0, 0.7, ">5%")]
    assert CEILING_METRIC not in summarize(rows)["overall"]
    with_ceiling = [dataclasses.replace(r, ceiling_dice=c) for r, c in zip(rows, (0.8, 1.0))]
    summary = summarize(with_ceiling)
    assert summary["overall"][CEILING_METRIC]["mean"] == pytest.approx(0.9)
    assert summary["by_burden"]["<1%"][CEILING_METRIC]["mean"] == pytest.approx(0.8)
    assert summary["by_burden"]["1-5%"][CEILING_METRIC] is None
    assert CEILING_METRIC not in summarize([with_ceiling[0], rows[1]])["overall"]


def test_official_mean_masd_skips_cases_with_an_empty_mask() -> None:
    rows = [
        row("a", 0.5, 2.0, 0.5, "<1%"),
        row("b", 0.7, 4.0, 0.5, "<1%"),
        row("c", 0.0, 300.0, 0.0, "<1%", pred_ml=0.0),
        dataclasses.replace(row("d", 1.0, 0.0, 1.0, "<1%", pred_ml=0.0), truth_ml=0.0),
    ]
    assert official_mean_masd(rows) == {"mean": pytest.approx(3.0), "n": 2}
    assert official_mean_masd(rows[2:]) == {"mean": None, "n": 0}


# --- the 2023 challenge evaluation's conventions (compat="bonbid2023") ----------------


@pytest.mark.parametrize(
    ("axis", "correct", "official"),
    [(0, (0.4, 1.0), (2.0, 0.5)), (1, (0.4, 1.0), (0.4, 1.0)), (2, (2.0, 0.5), (0.4, 1.0))],
)
def test_compat_pairs_the_x_and_z_spacings_the_other_way(axis: int, correct: tuple, official: tuple) -> None:
    """The one-voxel plate moved by one voxel along ``axis`` on a 0.8 x 0.8 x 4 mm grid.

    MASD is half the spacing that the shift axis is given (see the plate test above), and NSD at
    2 mm is 1 when that spacing is within 2 mm, else 0.5 (half of each surface stays at 0 mm).
    The official script gives axis x the z spacing (4 mm) and axis z the x spacing (0.8 mm);
    axis y keeps its own.
    """
    shape, size = [14, 14, 14], [8, 8, 8]
    shape[axis], size[axis] = 6, 1
    corner = tuple(2 if i == axis else 3 for i in range(3))
    plate = box(tuple(shape), corner, tuple(size))
    moved = np.roll(plate, 1, axis=axis)
    default = score_case(moved, plate, ANISOTROPIC)
    compat = score_case(moved, plate, ANISOTROPIC, compat=BONBID2023)
    assert (default.masd_mm, default.nsd) == pytest.approx(correct, abs=1e-6)
    assert (compat.masd_mm, compat.nsd) == pytest.approx(official, abs=1e-6)
    assert compat.dice == default.dice == 0.0
    assert compat.truth_ml == default.truth_ml  # volumes use the true voxel size either way


def test_compat_equals_the_reference_on_a_zyx_array_with_xyz_spacing() -> None:
    """What the official script does, literally: the (z, y, x) array that SimpleITK returns,
    given the image's (x, y, z) spacing, scored by the independent reference."""
    rng = np.random.default_rng(11)
    spacing = (0.7, 1.1, 3.5)
    truth = random_blobs(rng, (30, 26, 12))
    pred = random_blobs(rng, (30, 26, 12)) | (truth & (rng.random(truth.shape) > 0.4))
    expected_masd, expected_nsd = reference_scores(pred.transpose(2, 1, 0), truth.transpose(2, 1, 0), spacing, 2.0)
    result = score_case(pred, truth, spacing, compat=BONBID2023)
    assert result.masd_mm == pytest.approx(expected_masd, rel=1e-5)
    assert result.nsd == pytest.approx(expected_nsd, rel=1e-5)
    assert result.masd_mm != pytest.approx(score_case(pred, truth, spacing).masd_mm, rel=1e-2)


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_compat_gives_nan_masd_for_one_empty_mask(empty_side: str) -> None:
    shape = (10, 20, 5)
    lesion, empty = box(shape, (2, 2, 1), (3, 3, 2)), np.zeros(shape, dtype=bool)
    pred, truth = (empty, lesion) if empty_side == "pred" else (lesion, empty)
    result = score_case(pred, truth, (1.0, 0.5, 4.0), compat=BONBID2023)
    assert (result.dice, result.nsd) == (0.0, 0.0) and math.isnan(result.masd_mm)
    both_empty = score_case(empty, empty, (1.0, 0.5, 4.0), compat=BONBID2023)
    assert (both_empty.dice, both_empty.masd_mm, both_empty.nsd) == (1.0, 0.0, 1.0)


def test_summary_statistics_skip_a_nan_masd() -> None:
    rows = [row("a", 0.5, 2.0, 0.5, "<1%"), row("b", 0.7, 4.0, 0.5, "<1%"),
            row("c", 0.0, math.nan, 0.0, "1-5%", pred_ml=0.0)]
    summary = summarize(rows)
    assert summary["overall"]["masd_mm"] == {"mean": 3.0, "std": 1.0, "median": 3.0}
    assert summary["overall"]["dice"]["mean"] == pytest.approx(0.4) and summary["overall"]["n"] == 3
    assert summary["by_burden"]["1-5%"]["masd_mm"] is None and summary["by_burden"]["1-5%"]["n"] == 1


def test_compat_fixes_the_nsd_tolerance_and_knows_its_modes() -> None:
    cube = box((8, 8, 8), (2, 2, 2), (3, 3, 3))
    with pytest.raises(ValueError, match="scores NSD at 2 mm"):
        score_case(cube, cube, (1.0, 1.0, 1.0), nsd_tolerance_mm=1.0, compat=BONBID2023)
    with pytest.raises(ValueError, match="unknown scoring compatibility 'bonbid2024'"):
        score_case(cube, cube, (1.0, 1.0, 1.0), compat="bonbid2024")
