"""The Z_ADC baselines: thresholds and components on hand-made arrays, and the command on synthetic cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hieseg.cli.baselines import main
from hieseg.evaluation.baselines import (
    BASELINES,
    cleaned_zadc_threshold,
    zadc_threshold,
)
from hieseg.evaluation.folders import evaluate_folders
from hieseg.io.images import Geometry
from hieseg.io.layout import zadc_path
from hieseg.synthesis.generator import make_case, write_container_case, write_release

SHAPE = (20, 20, 8)
N_CASES = 2


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    write_release(root, n_cases=N_CASES, seed=11, sizes=(96, 96, 20))
    return root


def zadc_with(*voxel_sets: list[tuple[int, int, int]]) -> np.ndarray:
    """A Z_ADC array of 0 with -5 at the given voxels."""
    zadc = np.zeros(SHAPE, dtype=np.float32)
    for voxels in voxel_sets:
        for voxel in voxels:
            zadc[voxel] = -5.0
    return zadc


def line(start: tuple[int, int, int], length: int, axis: int = 0) -> list[tuple[int, int, int]]:
    return [tuple(c + (i if a == axis else 0) for a, c in enumerate(start)) for i in range(length)]


def test_threshold_is_strictly_below_minus_two() -> None:
    zadc = np.array([-2.0, -2.0001, -1.9, -8.0, 0.0, 3.0], dtype=np.float32).reshape(6, 1, 1)
    mask = zadc_threshold(zadc)
    assert mask.dtype == np.uint8
    assert mask.ravel().tolist() == [0, 1, 0, 1, 0, 0]


def test_cleaning_removes_face_connected_components_under_ten_voxels() -> None:
    nine, ten = line((1, 1, 1), 9), line((1, 5, 1), 10)
    mask = cleaned_zadc_threshold(zadc_with(nine, ten))
    assert mask.dtype == np.uint8
    assert mask.sum() == 10 and all(mask[v] for v in ten)
    # A 10-voxel component bent in 3D is one component: its voxels share faces.
    bent = line((1, 10, 1), 4) + line((4, 11, 1), 3, axis=1) + line((4, 13, 2), 3, axis=2)
    assert cleaned_zadc_threshold(zadc_with(bent)).sum() == 10


def test_components_touching_only_by_an_edge_or_a_corner_count_separately() -> None:
    first = line((2, 2, 2), 5)  # ends at (6, 2, 2)
    by_edge = line((7, 3, 2), 5, axis=2)  # (7, 3, 2) shares an edge with (6, 2, 2): x and y differ, z equal
    assert zadc_threshold(zadc_with(first, by_edge)).sum() == 10
    assert cleaned_zadc_threshold(zadc_with(first, by_edge)).sum() == 0
    by_corner = line((7, 3, 3), 5, axis=2)  # (7, 3, 3) shares only a corner with (6, 2, 2)
    assert cleaned_zadc_threshold(zadc_with(first, by_corner)).sum() == 0
    assert cleaned_zadc_threshold(zadc_with(first, by_edge), min_voxels=5).sum() == 10


def test_cli_writes_masks_on_the_zadc_grid_that_evaluate_reads(release: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "baselines"
    assert main(["--data", str(release), "--out", str(out), "--no-progress"]) == 0
    assert f"{N_CASES} case(s)" in capsys.readouterr().out
    voxels = {}
    for name in BASELINES:
        masks = sorted((out / name).glob("*.mha"))
        assert len(masks) == N_CASES
        for path in masks:
            mask = sitk.ReadImage(str(path))
            zadc = sitk.ReadImage(str(zadc_path(release, path.stem)))
            assert mask.GetPixelID() == sitk.sitkUInt8
            assert Geometry.of(mask) == Geometry.of(zadc)
            voxels[name, path.stem] = sitk.GetArrayFromImage(mask)
            if name == "zadc_lt2":
                expected = (sitk.GetArrayFromImage(zadc) < -2).astype(np.uint8)
                np.testing.assert_array_equal(voxels[name, path.stem], expected)
        rows = evaluate_folders(out / name, release, progress=False)
        assert [row.case_id for row in rows] == [path.stem for path in masks]
    for (name, case_id), mask in voxels.items():
        if name == "zadc_lt2_clean10":
            raw = voxels["zadc_lt2", case_id]
            assert np.all(mask <= raw) and 0 < mask.sum() < raw.sum()


def test_cli_reads_a_container_input_root_and_names_the_mask_after_the_adc(tmp_path: Path) -> None:
    uuid = "0b7a3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c"
    write_container_case(tmp_path / "input", make_case("c", 4, size=(96, 96, 20)), uuid)
    assert main(["--data", str(tmp_path / "input"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    for name in BASELINES:
        assert [p.name for p in (tmp_path / "out" / name).iterdir()] == [f"{uuid}.mha"]


@pytest.mark.parametrize("make_data", ["missing", "empty"])
def test_cli_reports_bad_data_in_one_line_naming_the_path(tmp_path: Path, capsys, make_data: str) -> None:
    data = tmp_path / "data"
    if make_data == "empty":
        (data / "1ADC_ss").mkdir(parents=True)
    assert main(["--data", str(data), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert str(data) in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
