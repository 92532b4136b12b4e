"""Malformed release folders fail with a message that names the case and the problem."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hieseg.errors import DatasetError
from hieseg.io.layout import adc_path, discover_cases, discover_union, label_path, load_case, zadc_path


@pytest.fixture
def release(small_release: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the small release."""
    return Path(shutil.copytree(small_release, tmp_path / "release"))


def first_case(root: Path) -> str:
    return discover_cases(root)[0].case_id


def set_voxel(path: Path, index: tuple[int, int, int], value: float) -> None:
    """Overwrite one voxel of an image file, keeping its geometry."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[index] = value
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(image)
    sitk.WriteImage(broken, str(path))


def test_discovers_every_case_with_its_three_files(release: Path) -> None:
    cases = discover_cases(release)
    assert len(cases) == 8
    for case in cases:
        loaded = load_case(case)
        assert loaded.adc.GetSize() == loaded.zadc.GetSize() == loaded.label.GetSize()


def test_a_union_of_folders_lists_the_cases_as_one_folder_holding_them_all_would(release: Path, tmp_path: Path) -> None:
    whole = [files.case_id for files in discover_cases(release)]
    moved = whole[1::2]
    other = tmp_path / "other"
    for case_id in moved:
        for path_of in (adc_path, zadc_path, label_path):
            target = path_of(other, case_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path_of(release, case_id), target)
    union = discover_union([other, release])
    assert [files.case_id for files in union] == whole
    assert all(files.adc.parent.parent == (other if files.case_id in moved else release) for files in union)


def test_a_union_refuses_a_case_id_in_two_folders_and_an_empty_list(release: Path, tmp_path: Path) -> None:
    again = Path(shutil.copytree(release, tmp_path / "again"))
    with pytest.raises(DatasetError, match=f"case {first_case(release)} is in both {release} and {again}"):
        discover_union([release, again])
    with pytest.raises(DatasetError, match="no release folder given"):
        discover_union([])


def test_missing_partner_names_the_case(release: Path) -> None:
    case_id = first_case(release)
    zadc_path(release, case_id).unlink()
    with pytest.raises(DatasetError, match=f"case {case_id}: missing partner file.*Zmap_{case_id}"):
        discover_cases(release)


def test_orphan_label_names_the_case(release: Path) -> None:
    shutil.copy(label_path(release, first_case(release)), label_path(release, "ORPHAN_001-VISIT_01"))
    with pytest.raises(DatasetError, match="case ORPHAN_001-VISIT_01: missing partner"):
        discover_cases(release)


def test_mismatched_geometry_names_the_case_and_the_field(release: Path) -> None:
    case_id = first_case(release)
    path = label_path(release, case_id)
    image = sitk.ReadImage(str(path))
    image.SetSpacing(tuple(s * 1.5 for s in image.GetSpacing()))
    sitk.WriteImage(image, str(path))
    case = next(c for c in discover_cases(release) if c.case_id == case_id)
    with pytest.raises(DatasetError, match=f"case {case_id}: .*_lesion.mha: geometry disagrees.*spacing"):
        load_case(case)


def test_corrupt_file_names_the_case(release: Path) -> None:
    case_id = first_case(release)
    path = zadc_path(release, case_id)
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nthis is not an image")
    case = next(c for c in discover_cases(release) if c.case_id == case_id)
    with pytest.raises(DatasetError, match=f"case {case_id}: .*Zmap_{case_id}.*cannot be read"):
        load_case(case)


def test_non_binary_label_is_refused(release: Path) -> None:
    case_id = first_case(release)
    set_voxel(label_path(release, case_id), (0, 0, 0), 7)
    case = next(c for c in discover_cases(release) if c.case_id == case_id)
    with pytest.raises(DatasetError, match="label must be binary"):
        load_case(case)


def test_nan_voxels_are_refused(release: Path) -> None:
    case_id = first_case(release)
    set_voxel(zadc_path(release, case_id), (1, 2, 3), np.nan)
    case = next(c for c in discover_cases(release) if c.case_id == case_id)
    with pytest.raises(DatasetError, match="1 NaN or infinite"):
        load_case(case)


def test_folder_without_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing the 1ADC_ss/ folder"):
        discover_cases(tmp_path)
    with pytest.raises(DatasetError, match="data folder not found"):
        discover_cases(tmp_path / "nope")
