"""Lesion-free copies of labelled cases (hieseg.data.healing): the lesion replaced by the tissue around it."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hieseg.data.healing import HEALED_SUFFIX, heal_case
from hieseg.io.images import to_xyz_array
from hieseg.io.layout import CaseFiles, CaseImages

SPACING = (0.8, 0.8, 2.0)


def image(array_xyz: np.ndarray) -> sitk.Image:
    result = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    result.SetSpacing(SPACING)
    result.SetOrigin((3.0, -2.0, 1.0))
    return result


def lesioned_case(seed: int = 0) -> tuple[CaseImages, np.ndarray]:
    """A 48x48x16 brain box of tissue (ADC about 1500, Z_ADC about 0, smoothed noise) holding a lesion block
    of ADC 800 and Z_ADC -4; outside the box the ADC is 0."""
    rng = np.random.default_rng(seed)
    shape = (64, 64, 20)
    brain = np.zeros(shape, dtype=bool)
    brain[8:56, 8:56, 2:18] = True
    label = np.zeros(shape, dtype=np.uint8)
    label[26:34, 26:34, 8:12] = 1
    adc = np.where(brain, 1500.0 + 60.0 * rng.standard_normal(shape), 0.0)
    zadc = np.where(brain, ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) * 2.0, 0.0)
    adc[label == 1], zadc[label == 1] = 800.0, -4.0
    files = CaseFiles("CASE_001-VISIT_01", Path("adc.mha"), Path("zadc.mha"), Path("label.mha"))
    case = CaseImages(files, image(adc.astype(np.float32)), image(zadc.astype(np.float32)), image(label))
    return case, label.astype(bool)


def test_the_lesion_is_replaced_by_the_tissue_around_it_and_the_label_emptied() -> None:
    case, lesion = lesioned_case()
    healed = heal_case(case, seed=1)
    adc, zadc = to_xyz_array(healed.adc), to_xyz_array(healed.zadc)
    assert healed.files.case_id == "CASE_001-VISIT_01" + HEALED_SUFFIX
    assert to_xyz_array(healed.label).sum() == 0
    assert abs(float(adc[lesion].mean()) - 1500.0) < 50.0
    assert abs(float(zadc[lesion].mean())) < 0.5 and float((zadc[lesion] < -2).mean()) < 0.05
    # the noise is as strong as the tissue's own, not a flat patch a network could spot
    tissue_z = to_xyz_array(case.zadc)[(to_xyz_array(case.adc) > 0) & ~lesion]
    assert 0.5 * tissue_z.std() < zadc[lesion].std() < 2.0 * tissue_z.std()


def test_only_the_widened_lesion_changes_and_the_brain_stays_the_same() -> None:
    case, lesion = lesioned_case()
    healed = heal_case(case, seed=1)
    before, after = to_xyz_array(case.adc), to_xyz_array(healed.adc)
    changed = (before != after) | (to_xyz_array(case.zadc) != to_xyz_array(healed.zadc))
    widened = ndimage.distance_transform_edt(~lesion, sampling=SPACING) <= 2.0
    assert changed.any() and not (changed & ~widened).any()
    assert np.array_equal(after > 0, before > 0)
    assert healed.adc.GetSpacing() == case.adc.GetSpacing() and healed.zadc.GetOrigin() == case.zadc.GetOrigin()
    assert healed.label.GetSize() == case.label.GetSize() and healed.label.GetSpacing() == SPACING


def test_the_same_seed_gives_the_same_copy_and_another_seed_another() -> None:
    case, lesion = lesioned_case()
    first, again, other = (to_xyz_array(heal_case(case, seed).zadc) for seed in (3, 3, 4))
    assert np.array_equal(first, again)
    assert not np.array_equal(first[lesion], other[lesion])


def test_a_lesion_free_case_is_copied_unchanged_and_an_unlabelled_one_refused() -> None:
    case, _ = lesioned_case()
    empty = sitk.Image(case.label.GetSize(), case.label.GetPixelID())
    empty.CopyInformation(case.label)
    free = CaseImages(case.files, case.adc, case.zadc, empty)
    healed = heal_case(free, seed=0)
    assert np.array_equal(to_xyz_array(healed.adc), to_xyz_array(case.adc))
    assert np.array_equal(to_xyz_array(healed.zadc), to_xyz_array(case.zadc))
    with pytest.raises(ValueError, match="CASE_001-VISIT_01 has no label"):
        heal_case(CaseImages(case.files, case.adc, case.zadc, None), seed=0)


def test_a_lesion_that_leaves_no_brain_to_heal_from_is_refused() -> None:
    case, _ = lesioned_case()
    whole = (to_xyz_array(case.adc) > 0).astype(np.uint8)
    covered = CaseImages(case.files, case.adc, case.zadc, image(whole))
    with pytest.raises(ValueError, match="CASE_001-VISIT_01: no brain outside its lesion"):
        heal_case(covered, seed=0)
