"""The Z_ADC boundary step: each predicted lesion's edge redrawn where the smoothed map comes part way back."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hieseg.config.settings import ExperimentConfig, PostProcessing, TuningConfig
from hieseg.errors import ConfigError
from hieseg.evaluation.scoring import Reference
from hieseg.inference.boundary import REACH_MM, ZadcMap, zadc_boundary
from hieseg.inference.postprocess import final_mask
from hieseg.io.layout import CaseFiles, CaseImages
from hieseg.training.tuning import candidate_settings, score_settings

SPACING = (1.0, 1.0, 1.0)
SHAPE = (40, 40, 24)


def ball(radius: float, centre: tuple[int, int, int] = (20, 20, 12)) -> np.ndarray:
    """A ball of ``radius`` voxels (1 mm each), boolean, axes (x, y, z)."""
    grid = np.indices(SHAPE)
    return sum((axis - c) ** 2 for axis, c in zip(grid, centre)) <= radius ** 2


def smoothed_map(lesion: np.ndarray, depth: float = -6.0, level: float = 0.0) -> ZadcMap:
    """A Z_ADC map as the release's are made: a sharp lesion at ``depth`` in tissue at ``level``, smoothed by 2 mm
    (Gaussian sigma 0.85 mm), over a brain that fills the grid."""
    sharp = np.where(lesion, depth, level).astype(np.float32)
    return ZadcMap(ndimage.gaussian_filter(sharp, 0.85), np.ones(SHAPE, dtype=bool))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a.astype(bool) & b.astype(bool)).sum()) / float(a.astype(bool).sum() + b.astype(bool).sum())


def test_a_mask_too_small_or_too_large_is_redrawn_at_the_lesions_edge() -> None:
    truth = ball(6)
    zadc_map = smoothed_map(truth)
    for wrong in (ball(4), ball(8)):
        redrawn = zadc_boundary(wrong.astype(np.uint8), zadc_map, SPACING, 0.5)
        assert dice(wrong, truth) < 0.8
        assert dice(redrawn, truth) > 0.95
        assert redrawn.dtype == np.uint8


def test_the_fraction_moves_the_edge_towards_the_depth() -> None:
    truth = ball(6)
    zadc_map = smoothed_map(truth)
    volumes = [int(zadc_boundary(truth.astype(np.uint8), zadc_map, SPACING, f).sum()) for f in (0.2, 0.5, 0.8)]
    assert volumes[0] > volumes[1] > volumes[2]


def test_the_level_is_the_surroundings_not_zero() -> None:
    truth = ball(6)
    shifted = smoothed_map(truth, depth=-4.0, level=2.0)  # an atlas offset: healthy tissue at +2
    redrawn = zadc_boundary(ball(4).astype(np.uint8), shifted, SPACING, 0.5)
    assert dice(redrawn, truth) > 0.95


def test_off_a_shallow_component_and_an_empty_mask_stay_as_they_are() -> None:
    truth = ball(6)
    mask = ball(4).astype(np.uint8)
    assert zadc_boundary(mask, smoothed_map(truth), SPACING, 0.0) is mask
    flat = ZadcMap(np.zeros(SHAPE, dtype=np.float32), np.ones(SHAPE, dtype=bool))
    np.testing.assert_array_equal(zadc_boundary(mask, flat, SPACING, 0.5), mask)
    empty = np.zeros(SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(zadc_boundary(empty, smoothed_map(truth), SPACING, 0.5), empty)


def test_growth_stays_near_the_component_inside_the_brain_and_takes_no_other_lesion() -> None:
    big = ball(10)
    other = ball(2, centre=(20, 34, 12))
    zadc_map = smoothed_map(big | other)
    brain = np.ones(SHAPE, dtype=bool)
    brain[:, :, :10] = False
    seed = ball(3).astype(np.uint8)
    redrawn = zadc_boundary(seed, ZadcMap(zadc_map.zadc, brain), SPACING, 0.5).astype(bool)
    distance = ndimage.distance_transform_edt(~seed.astype(bool), sampling=SPACING)
    assert redrawn.sum() > seed.sum()
    assert distance[redrawn].max() <= REACH_MM
    assert not (redrawn & ~brain).any()
    assert not (redrawn & other).any()


def test_components_are_redrawn_each_from_its_own_depth() -> None:
    deep, faint = ball(5, centre=(12, 20, 12)), ball(5, centre=(29, 20, 12))
    sharp = np.where(deep, -8.0, np.where(faint, -2.0, 0.0)).astype(np.float32)
    zadc_map = ZadcMap(ndimage.gaussian_filter(sharp, 0.85), np.ones(SHAPE, dtype=bool))
    mask = (ball(3, centre=(12, 20, 12)) | ball(3, centre=(29, 20, 12))).astype(np.uint8)
    redrawn = zadc_boundary(mask, zadc_map, SPACING, 0.5)
    assert dice(redrawn, deep | faint) > 0.9  # one threshold for both would lose the faint one's rim


def test_the_final_mask_needs_the_map_only_when_the_boundary_is_on() -> None:
    probability = ball(4).astype(np.float32)
    on = PostProcessing(0.5, 0.0, 0.0, False, zadc_boundary=0.5)
    with pytest.raises(ValueError, match="zadc_boundary"):
        final_mask(probability, SPACING, on)
    truth = ball(6)
    assert dice(final_mask(probability, SPACING, on, smoothed_map(truth)), truth) > 0.95
    off = PostProcessing(0.5, 0.0, 0.0, False)
    np.testing.assert_array_equal(final_mask(probability, SPACING, off), ball(4))


def test_the_per_case_decision_sees_the_redrawn_volume() -> None:
    probability = ball(4).astype(np.float32)  # 257 voxels; redrawn at the truth's edge about 900
    settings = PostProcessing(0.5, 0.0, 0.0, False, min_total_mm3=500.0, zadc_boundary=0.5)
    assert final_mask(probability, SPACING, settings, smoothed_map(ball(6))).any()
    assert not final_mask(probability, SPACING, PostProcessing(0.5, 0.0, 0.0, False, min_total_mm3=500.0)).any()


def image(array_xyz: np.ndarray) -> sitk.Image:
    result = sitk.GetImageFromArray(array_xyz.transpose(2, 1, 0))
    result.SetSpacing(SPACING)
    return result


def test_tuning_scores_each_boundary_and_finds_the_one_that_fits_the_labels() -> None:
    truth = ball(6)
    zadc_map = smoothed_map(truth)
    files = CaseFiles("blurred", Path("adc.mha"), Path("zadc.mha"), Path("label.mha"))
    case = CaseImages(files=files, adc=image(np.full(SHAPE, 1000.0, dtype=np.float32)), zadc=image(zadc_map.zadc),
                      label=image(truth.astype(np.uint8)))
    settings = TuningConfig(thresholds=(0.5,), min_component_mm3=(0.0,), empty_fallback_probability=(0.0,),
                            zadc_boundary=(0.0, 0.5), min_total_mm3=(0.0, 500.0))
    assert len(candidate_settings(settings, tta=False)) == 4
    scores = {(key.zadc_boundary, key.min_total_mm3): value
              for key, value in score_settings(ball(4).astype(np.float32), case, settings).items()}
    assert scores[(0.5, 0.0)][0] > 0.95 > scores[(0.0, 0.0)][0]
    assert scores[(0.0, 500.0)][0] == 0.0  # the network's 257 mm3 alone is emptied
    assert scores[(0.5, 500.0)] == scores[(0.5, 0.0)]


@pytest.mark.parametrize("key, value", [("inference.zadc_boundary", 1.0), ("inference.zadc_boundary", -0.1),
                                        ("tuning.zadc_boundary", [0.0, 1.2])])
def test_a_boundary_fraction_outside_zero_to_one_is_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match="zadc_boundary"):
        ExperimentConfig().with_overrides({key: value})


def test_weights_of_earlier_versions_keep_the_networks_edge() -> None:
    data = ExperimentConfig().to_dict()
    del data["inference"]["zadc_boundary"]
    assert ExperimentConfig.from_dict(data).inference.postprocessing.zadc_boundary == 0.0


def test_every_setting_the_tuner_scores_is_scored_as_its_final_mask() -> None:
    truth = ball(6)
    probability = np.where(ball(4), 0.8, np.where(ball(5), 0.35, 0.0)).astype(np.float32)
    probability[3, 3, 3:5] = 0.6  # a 2 mm3 speck that the smaller minimum components remove
    case = CaseImages(files=CaseFiles("graded", Path("adc.mha"), Path("zadc.mha"), Path("label.mha")),
                      adc=image(np.full(SHAPE, 1000.0, dtype=np.float32)), zadc=image(smoothed_map(truth).zadc),
                      label=image(truth.astype(np.uint8)))
    settings = TuningConfig(thresholds=(0.3, 0.5, 0.9), min_component_mm3=(0.0, 5.0, 600.0),
                            empty_fallback_probability=(0.0, 0.5), zadc_boundary=(0.0, 0.5),
                            min_total_mm3=(0.0, 300.0, 2000.0))
    reference = Reference.of_case(case)
    zadc_map = ZadcMap(reference.zadc, reference.brain)
    scores = score_settings(probability, case, settings)
    assert len(scores) == 3 * 3 * 2 * 2 * 3 and len(set(scores.values())) >= 6
    for setting, triple in scores.items():
        metrics = reference.score(final_mask(probability, SPACING, setting, zadc_map))
        assert triple == (metrics.dice, metrics.masd_mm, metrics.nsd), setting
