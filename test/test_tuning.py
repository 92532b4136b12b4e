"""Post-processing chosen on validation cases: hand-made scores, the ranking, the TTA rule, config.json."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import tiny_config

from hieseg.config.settings import (
    CONFIG_FILENAME,
    ExperimentConfig,
    PostProcessing,
    TuningConfig,
)
from hieseg.data.healing import HEALED_SUFFIX
from hieseg.errors import ConfigError
from hieseg.io.layout import CaseFiles, CaseImages, discover_cases, load_case
from hieseg.training.tuning import (
    TUNING_JSON,
    Candidate,
    HeldOut,
    apply_tuning,
    below_smallest_lesion,
    best_candidate,
    mean_candidates,
    score_settings,
    smallest_lesion_mm3,
    tune,
    tune_trained_folder,
)


def image(array_xyz: np.ndarray) -> sitk.Image:
    result = sitk.GetImageFromArray(array_xyz.transpose(2, 1, 0))
    result.SetSpacing((1.0, 1.0, 1.0))
    return result


def hand_made_case() -> tuple[CaseImages, np.ndarray]:
    """A 4x4x4 lesion predicted at 0.8, plus a 2-voxel speck at 0.45 far from it."""
    truth = np.zeros((24, 24, 24), dtype=np.uint8)
    truth[4:8, 4:8, 4:8] = 1
    probability = np.zeros(truth.shape, dtype=np.float32)
    probability[4:8, 4:8, 4:8] = 0.8
    probability[18, 18, 18:20] = 0.45
    adc = image(np.ones(truth.shape, dtype=np.float32))
    files = CaseFiles("hand", Path("adc.mha"), Path("zadc.mha"), Path("label.mha"))
    return CaseImages(files=files, adc=adc, zadc=adc, label=image(truth)), probability


def candidate(dice: float, masd: float, nsd: float, threshold: float = 0.5) -> Candidate:
    return Candidate(PostProcessing(threshold, 0.0, 0.0, False), dice=dice, masd_mm=masd, nsd=nsd)


def test_scores_every_setting_on_the_native_grid() -> None:
    case, probability = hand_made_case()
    settings = TuningConfig(thresholds=(0.4, 0.5), min_component_mm3=(0.0, 5.0), empty_fallback_probability=(0.0,))
    scores = {(key.threshold, key.min_component_mm3): value
              for key, value in score_settings(probability, case, settings).items()}
    assert set(scores) == {(0.4, 0.0), (0.4, 5.0), (0.5, 0.0), (0.5, 5.0)}
    assert scores[(0.5, 0.0)] == pytest.approx((1.0, 0.0, 1.0))
    # at 0.4 the 2-voxel speck joins: Dice = 2 * 64 / (66 + 64)
    dice, masd, nsd = scores[(0.4, 0.0)]
    assert dice == pytest.approx(128 / 130)
    assert masd > 0.2 and nsd < 0.99  # the speck lies about 20 mm from the lesion
    # a 5 mm3 minimum removes the 2 mm3 speck again
    assert scores[(0.4, 5.0)] == pytest.approx((1.0, 0.0, 1.0))


def test_empty_fallback_keeps_the_peak_only_when_the_mask_is_empty() -> None:
    case, probability = hand_made_case()
    settings = TuningConfig(thresholds=(0.9,), min_component_mm3=(0.0,), empty_fallback_probability=(0.0, 0.5, 0.85))
    scores = {key.empty_fallback_probability: value for key, value in score_settings(probability, case, settings).items()}
    assert scores[0.0][0] == 0.0  # nothing reaches 0.9: empty mask, Dice 0
    assert scores[0.5] == pytest.approx((1.0, 0.0, 1.0))  # the 0.8 peak's component is the lesion
    assert scores[0.85][0] == 0.0  # the peak is below the fallback's floor


def lesion_free_case() -> tuple[CaseImages, np.ndarray]:
    """No lesion, and a false 2x2x2 blob (8 mm3) predicted at 0.9."""
    case, _ = hand_made_case()
    empty = image(np.zeros((24, 24, 24), dtype=np.uint8))
    probability = np.zeros((24, 24, 24), dtype=np.float32)
    probability[14:16, 14:16, 14:16] = 0.9
    return CaseImages(files=case.files, adc=case.adc, zadc=case.zadc, label=empty), probability


def test_the_minimum_total_empties_a_case_only_when_its_whole_mask_is_smaller() -> None:
    case, probability = hand_made_case()  # a 64 mm3 lesion
    settings = TuningConfig(thresholds=(0.5,), min_component_mm3=(0.0,), empty_fallback_probability=(0.0,),
                            min_total_mm3=(0.0, 64.0, 65.0))
    scores = {key.min_total_mm3: value for key, value in score_settings(probability, case, settings).items()}
    assert scores[0.0] == scores[64.0] == pytest.approx((1.0, 0.0, 1.0))
    assert scores[65.0][0] == 0.0 and scores[65.0][2] == 0.0  # emptied: Dice 0, NSD 0


def test_lesion_free_copies_choose_a_per_case_empty_decision_that_lesioned_cases_alone_never_would() -> None:
    lesioned, lesioned_probability = hand_made_case()
    free, free_probability = lesion_free_case()
    settings = TuningConfig(thresholds=(0.5,), min_component_mm3=(0.0,), empty_fallback_probability=(0.0,),
                            min_total_mm3=(0.0, 20.0))
    lesioned_scores = [score_settings(lesioned_probability, lesioned, settings)]
    free_scores = [score_settings(free_probability, free, settings)]
    alone = mean_candidates(lesioned_scores, [], 0.0)
    assert best_candidate(alone).settings.min_total_mm3 == 0.0  # a tie on lesioned cases goes to 'off'
    assert all(c.lesion_free_empty is None for c in alone)
    mixed = {c.settings.min_total_mm3: c for c in mean_candidates(lesioned_scores, free_scores, 0.25)}
    assert mixed[20.0].lesion_free_empty == 1.0 and mixed[0.0].lesion_free_empty == 0.0
    assert mixed[20.0].dice == pytest.approx(1.0) and mixed[0.0].dice == pytest.approx(0.75)
    assert mixed[0.0].masd_mm > mixed[20.0].masd_mm == pytest.approx(0.0)
    assert best_candidate(list(mixed.values())).settings.min_total_mm3 == 20.0


def test_lesion_free_copies_are_predicted_and_named_in_the_result(untrained_model_dir: Path, validation_cases) -> None:
    config = ExperimentConfig.load(untrained_model_dir / CONFIG_FILENAME).with_overrides(
        {"tuning.thresholds": (0.5,), "tuning.min_component_mm3": (0.0,), "tuning.empty_fallback_probability": (0.0,),
         "tuning.min_total_mm3": (0.0, 1e9), "tuning.try_tta": False, "tuning.lesion_free_share": 0.5})
    result = tune(config, [HeldOut((untrained_model_dir / "fold0.pt",), validation_cases)], torch.device("cpu"), False)
    ids = [case.files.case_id for case in validation_cases]
    assert result.case_ids == ids and result.lesion_free_ids == [i + HEALED_SUFFIX for i in ids]
    by_total = {c.settings.min_total_mm3: c for c in result.candidates}
    assert by_total[1e9].lesion_free_empty == 1.0  # every mask emptied
    assert result.to_dict()["lesion_free_share"] == 0.5


def test_the_smallest_lesion_is_the_least_labelled_total_of_the_lesioned_cases() -> None:
    lesioned, _ = hand_made_case()  # 64 mm3
    free, _ = lesion_free_case()
    assert smallest_lesion_mm3([lesioned, free]) == pytest.approx(64.0)
    assert smallest_lesion_mm3([free]) is None


def test_per_case_decisions_at_or_above_the_smallest_lesion_are_not_tried() -> None:
    settings = TuningConfig(min_total_mm3=(0.0, 25.0, 50.0, 100.0))
    assert below_smallest_lesion(settings, 50.0).min_total_mm3 == (0.0, 25.0)
    assert below_smallest_lesion(settings, None).min_total_mm3 == (0.0, 25.0, 50.0, 100.0)
    assert below_smallest_lesion(TuningConfig(min_total_mm3=(100.0,)), 40.0).min_total_mm3 == (0.0,)


def test_tuning_a_trained_folder_bounds_the_decision_by_its_cases_labels(untrained_model_dir: Path, validation_cases,
                                                                        tmp_path: Path) -> None:
    config = ExperimentConfig.load(untrained_model_dir / CONFIG_FILENAME).with_overrides(
        {"tuning.thresholds": (0.5,), "tuning.min_component_mm3": (0.0,), "tuning.empty_fallback_probability": (0.0,),
         "tuning.min_total_mm3": (0.0, 1.0, 1e9), "tuning.try_tta": False})
    smallest = smallest_lesion_mm3(validation_cases)
    assert smallest is not None and 1.0 < smallest < 1e9
    ids = [case.files.case_id for case in validation_cases]
    result = tune_trained_folder(config, tmp_path, [(untrained_model_dir / "fold0.pt", ids)], validation_cases,
                                 torch.device("cpu"), False)
    assert sorted(c.settings.min_total_mm3 for c in result.candidates) == [0.0, 1.0]
    assert {c["min_total_mm3"] for c in json.loads((tmp_path / TUNING_JSON).read_text())["candidates"]} == {0.0, 1.0}


def test_refinement_and_lesion_free_copies_are_refused_together() -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        TuningConfig(try_refinement=True, lesion_free_share=0.2)


def test_best_mean_rank_wins_and_ties_go_to_dice() -> None:
    a = candidate(0.60, 5.0, 0.60)  # ranks 1, 3, 2 -> mean 2
    b = candidate(0.58, 2.0, 0.65)  # ranks 2, 1, 1 -> mean 1.33
    c = candidate(0.50, 3.0, 0.50)  # ranks 3, 2, 3
    assert best_candidate([a, b, c]) is b
    tie_low, tie_high = candidate(0.5, 2.0, 0.6), candidate(0.6, 3.0, 0.6)  # mean ranks 1.5 and 1.5
    assert best_candidate([tie_low, tie_high]) is tie_high


@pytest.fixture(scope="module")
def validation_cases(small_release: Path) -> list[CaseImages]:
    return [load_case(files) for files in discover_cases(small_release)[:2]]


def test_tta_needs_a_measured_gain(untrained_model_dir: Path, validation_cases) -> None:
    config = ExperimentConfig.load(untrained_model_dir / CONFIG_FILENAME).with_overrides(
        {"tuning.thresholds": (0.3, 0.5), "tuning.min_component_mm3": (0.0, 50.0),
         "tuning.empty_fallback_probability": (0.0,), "tuning.tta_min_dice_gain": 2.0}
    )
    held_out = [HeldOut((untrained_model_dir / "fold0.pt",), validation_cases)]
    result = tune(config, held_out, torch.device("cpu"), progress=False)
    assert len(result.candidates) == 8 and sum(c.settings.tta_flips for c in result.candidates) == 4
    assert result.best_tta is not None and not result.chosen.settings.tta_flips
    assert result.chosen is result.best_plain
    assert result.case_ids == [case.files.case_id for case in validation_cases]


def test_tuning_can_be_limited_to_plain_prediction(untrained_model_dir: Path, validation_cases) -> None:
    config = ExperimentConfig.load(untrained_model_dir / CONFIG_FILENAME).with_overrides(
        {"tuning.thresholds": (0.5,), "tuning.min_component_mm3": (0.0,), "tuning.empty_fallback_probability": (0.0,),
         "tuning.try_tta": False}
    )
    result = tune(config, [HeldOut((untrained_model_dir / "fold0.pt",), validation_cases)], torch.device("cpu"), False)
    assert result.best_tta is None and len(result.candidates) == 1


def test_chosen_setting_lands_in_config_json(tmp_path: Path) -> None:
    config = tiny_config()
    config.save(tmp_path / CONFIG_FILENAME)
    chosen = Candidate(PostProcessing(threshold=0.3, min_component_mm3=25.0, empty_fallback_probability=0.1,
                                      tta_flips=True, zadc_boundary=0.4), dice=0.7, masd_mm=2.0, nsd=0.8)
    from hieseg.training.tuning import TuningResult

    result = TuningResult(chosen=chosen, best_plain=chosen, best_tta=chosen, candidates=[chosen], case_ids=["a"])
    apply_tuning(config, tmp_path, result)
    saved = ExperimentConfig.load(tmp_path / CONFIG_FILENAME).inference
    assert (saved.threshold, saved.min_component_mm3, saved.empty_fallback_probability, saved.tta_flips,
            saved.zadc_boundary) == (0.3, 25.0, 0.1, True, 0.4)
    assert json.loads((tmp_path / TUNING_JSON).read_text())["chosen"] == {
        "threshold": 0.3, "min_component_mm3": 25.0, "empty_fallback_probability": 0.1, "tta_flips": True,
        "refine": False, "min_total_mm3": 0.0, "zadc_boundary": 0.4, "dice": 0.7, "masd_mm": 2.0, "nsd": 0.8}
