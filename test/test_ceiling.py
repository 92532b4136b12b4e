"""The resampling ceiling: exact on the network's own grid, lossy for tiny lesions, monotone in the grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from hieseg.data.transforms import IMAGE
from hieseg.evaluation.ceiling import resampling_ceiling, resampling_step, round_trip
from hieseg.io.images import Geometry, to_xyz_array
from hieseg.synthesis.generator import make_case

NETWORK_GRID = (1.5, 1.5, 3.0)


def label_image(array: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    """An (x, y, z) array as a uint8 image with the given spacing and an arbitrary origin."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(np.uint8).transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin((-20.0, 13.5, 4.0))
    return image


def sphere(shape: tuple[int, int, int], spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    return sum(((grid[i] - shape[i] / 2) * spacing[i]) ** 2 for i in range(3)) <= radius_mm**2


@pytest.mark.parametrize("seed", [0, 1])
def test_the_ceiling_is_one_on_the_network_grid_itself(seed: int) -> None:
    case = make_case("same", seed, size=(96, 96, 24), spacing=NETWORK_GRID)
    assert resampling_ceiling(case.label, NETWORK_GRID) == pytest.approx(1.0, abs=1e-6)


def test_a_single_fine_voxel_is_lost_on_a_coarse_grid() -> None:
    spacing = (0.7, 0.7, 0.7)
    voxel = np.zeros((40, 40, 40), dtype=np.uint8)
    voxel[20, 21, 19] = 1
    assert resampling_ceiling(label_image(voxel, spacing), NETWORK_GRID) < 0.5


def test_a_big_sphere_survives_the_round_trip() -> None:
    spacing = (0.7, 0.7, 0.7)
    ball = sphere((80, 80, 80), spacing, radius_mm=15.0)
    assert resampling_ceiling(label_image(ball, spacing), NETWORK_GRID) > 0.95


def test_an_empty_label_has_ceiling_one_and_a_non_binary_one_is_refused() -> None:
    assert resampling_ceiling(label_image(np.zeros((10, 10, 4)), (1.0, 1.0, 3.0)), NETWORK_GRID) == 1.0
    with pytest.raises(ValueError, match="binary"):
        resampling_ceiling(label_image(np.full((10, 10, 4), 2), (1.0, 1.0, 3.0)), NETWORK_GRID)
    with pytest.raises(ValueError, match="spacing"):
        resampling_ceiling(label_image(np.zeros((10, 10, 4)), (1.0, 1.0, 3.0)), (1.5, 0.0, 3.0))


def test_the_round_trip_equals_monai_inverting_its_own_resampling() -> None:
    label = make_case("inverse", 3, size=(128, 128, 24)).label
    affine = torch.as_tensor(Geometry.of(label).affine(), dtype=torch.float64)
    step = resampling_step(NETWORK_GRID)
    resampled = step({IMAGE: MetaTensor(to_xyz_array(label)[None], affine=affine)})
    monai = step.inverse(resampled)[IMAGE].as_tensor()[0].numpy()
    np.testing.assert_allclose(round_trip(label, NETWORK_GRID), monai, atol=1e-6)


def test_a_finer_network_grid_never_has_a_lower_mean_ceiling_than_a_much_coarser_one() -> None:
    # Only against a much coarser grid: between close grids, how each aligns with the native
    # slices can matter more than the spacing (0.9 x 0.9 x 2.5 mm can lose to 1 x 1 x 2.5 mm).
    labels = [make_case(f"c{seed}", seed, size=(128, 128, 24)).label for seed in range(3)]
    fine, default, coarse = [
        np.mean([resampling_ceiling(label, grid) for label in labels])
        for grid in ((1.0, 1.0, 2.5), NETWORK_GRID, (3.0, 3.0, 6.0))
    ]
    assert fine >= coarse and default >= coarse
    assert coarse < 1.0

