"""The optional refinement stage: hand-computed features, a fit that recovers a known rule, JSON that loads
only when sound, weights folders that carry it, and tuning that cross-fits it."""

import json
import shutil
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
from hieseg.errors import ModelError
from hieseg.inference.predictor import Predictor
from hieseg.io.images import to_xyz_array
from hieseg.io.layout import CaseFiles, CaseImages, discover_cases, load_case
from hieseg.model.refinement import (
    FEATURE_NAMES,
    REFINEMENT_FILENAME,
    RefinementExample,
    Refiner,
    fit_refiner,
    load_refiner,
    neighbourhood_voxels,
    save_refiner,
    voxel_features,
)
from hieseg.model.weights import load_bundle
from hieseg.training.tuning import (
    TUNING_JSON,
    Candidate,
    TuningResult,
    apply_tuning,
    refinement_candidates,
)


def z_marked_example(seed: int, shape: tuple[int, int, int] = (20, 20, 4)) -> RefinementExample:
    """Lesions exactly where Z_ADC < -3, an uninformative probability of 0.3 everywhere."""
    rng = np.random.default_rng(seed)
    zadc = np.clip(rng.normal(0.0, 1.0, shape), -2.5, 3.0)
    zadc[2:6, 2:6, :] = rng.uniform(-7.0, -4.0, (4, 4, shape[2]))
    return RefinementExample(probability=np.full(shape, 0.3), adc=np.full(shape, 1200.0), zadc=zadc,
                             spacing=(1.0, 1.0, 3.0), label=(zadc < -3).astype(np.uint8))


def refiner_of(weights: tuple[float, ...]) -> Refiner:
    n = len(FEATURE_NAMES)
    return Refiner(neighbourhood_mm=3.0, mean=(0.0,) * n, scale=(1.0,) * n, weights=weights, bias=-1.0)


@pytest.mark.parametrize(("spacing", "expected"), [
    ((1.375, 1.375, 2.2), (5, 5, 1)),  # 5 / 1.375 = 3.6 -> 4 -> odd 5
    ((0.625, 0.625, 2.0), (9, 9, 1)),  # 8 -> 9
    ((2.0, 1.0, 5.0), (3, 5, 1)),      # 2.5 rounds to 2 -> 3; 5 stays
    ((10.0, 10.0, 4.0), (1, 1, 1)),    # smaller than a voxel: the voxel alone
])
def test_neighbourhood_is_an_odd_in_plane_square_of_about_the_side(spacing, expected) -> None:
    assert neighbourhood_voxels(spacing, 5.0) == expected


def test_features_by_hand() -> None:
    adc = np.zeros((3, 3, 1))
    adc[:2, :, 0] = [[800.0, 1000.0, 1000.0], [1000.0, 1000.0, 1200.0]]  # the last row is background
    zadc = np.zeros_like(adc)
    zadc[0, 0, 0], zadc[1, 2, 0] = -4.0, 2.0
    probability = np.zeros_like(adc)
    probability[0, 0, 0] = 0.5
    features, brain = voxel_features(probability, adc, zadc, (1.0, 1.0, 1.0), 3.0)
    assert brain.sum() == 6 and features.shape == (6, len(FEATURE_NAMES))
    first = dict(zip(FEATURE_NAMES, features[0]))  # voxel (0, 0): its 3x3 square holds 4 brain voxels
    brain_adc = np.array([800.0, 1000.0, 1000.0, 1000.0, 1000.0, 1200.0])
    adc_z = (brain_adc - brain_adc.mean()) / brain_adc.std()
    assert first["probability_logit"] == pytest.approx(0.0)
    assert first["zadc"] == -4.0 and first["adc_brain_z"] == pytest.approx(adc_z[0])
    assert first["local_mean_zadc"] == pytest.approx(-4.0 / 4)
    assert first["local_mean_adc_brain_z"] == pytest.approx((adc_z[0] + adc_z[1] + adc_z[3] + adc_z[4]) / 4)
    assert first["local_mean_probability"] == pytest.approx((0.5 + 3 * 1e-4) / 4)
    assert first["local_min_zadc"] == -4.0
    last = dict(zip(FEATURE_NAMES, features[-1]))  # voxel (1, 2): no dark voxel in its square
    assert last["probability_logit"] == pytest.approx(np.log(1e-4 / (1 - 1e-4)))
    assert last["local_min_zadc"] == 0.0 and last["local_mean_zadc"] == pytest.approx(2.0 / 4)


def test_fit_recovers_a_rule_the_probability_misses() -> None:
    refiner = fit_refiner([z_marked_example(seed) for seed in range(3)], neighbourhood_mm=1.0)
    held_out = z_marked_example(9)
    refined = refiner.refine(held_out.probability, held_out.adc, held_out.zadc, held_out.spacing)
    assert refined.dtype == np.float32
    assert np.array_equal(refined >= 0.5, held_out.label > 0)
    assert refiner.weights[FEATURE_NAMES.index("zadc")] < 0  # darker Z_ADC, more lesion


def test_fit_needs_both_classes() -> None:
    example = z_marked_example(0)
    healthy = RefinementExample(example.probability, example.adc, example.zadc, example.spacing,
                                np.zeros_like(example.label))
    with pytest.raises(ValueError, match="lesion and background"):
        fit_refiner([healthy], neighbourhood_mm=1.0)


def test_refined_probability_is_zero_outside_the_brain() -> None:
    example = z_marked_example(1)
    adc = example.adc.copy()
    adc[:, :, 0] = 0.0
    refined = refiner_of((0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0)).refine(example.probability, adc, example.zadc,
                                                                      example.spacing)
    assert not refined[:, :, 0].any() and refined[:, :, 1:].all()


def test_saved_refiner_loads_equal_and_a_folder_without_one_has_none(tmp_path: Path) -> None:
    assert load_refiner(tmp_path) is None
    refiner = fit_refiner([z_marked_example(0)], neighbourhood_mm=2.0)
    path = save_refiner(refiner, tmp_path)
    assert path == tmp_path / REFINEMENT_FILENAME
    assert load_refiner(tmp_path) == refiner


@pytest.mark.parametrize(("change", "message"), [
    ({"weights": [0.0] * (len(FEATURE_NAMES) - 1)}, "'weights' must be"),
    ({"bias": float("nan")}, "'bias' must be"),
    ({"scale": [0.0] * len(FEATURE_NAMES)}, "'scale' must be positive"),
    ({"features": ["zadc"]}, "tune the weights folder again"),
    ({"neighbourhood_mm": -1.0}, "'neighbourhood_mm' must be positive"),
])
def test_unsound_refinement_json_is_refused_naming_it(tmp_path: Path, change: dict, message: str) -> None:
    data = {**refiner_of((0.0,) * len(FEATURE_NAMES)).to_dict(), **change}
    (tmp_path / REFINEMENT_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message) as error:
        load_refiner(tmp_path)
    assert REFINEMENT_FILENAME in str(error.value)


def test_refinement_json_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / REFINEMENT_FILENAME).write_bytes(b"\x80PK not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_refiner(tmp_path)


@pytest.fixture()
def refining_model_dir(untrained_model_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(untrained_model_dir, folder)
    config = ExperimentConfig.load(folder / CONFIG_FILENAME)
    config.with_overrides({"inference.refine": True}).save(folder / CONFIG_FILENAME)
    return folder


def test_a_folder_that_refines_without_its_refiner_is_refused(refining_model_dir: Path) -> None:
    with pytest.raises(ModelError, match=f"{REFINEMENT_FILENAME} is missing"):
        load_bundle(refining_model_dir, torch.device("cpu"))


def test_predictor_refines_the_networks_probability(refining_model_dir: Path, small_release: Path) -> None:
    refiner = refiner_of((0.5, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    save_refiner(refiner, refining_model_dir)
    bundle = load_bundle(refining_model_dir, torch.device("cpu"))
    assert bundle.refiner == refiner
    predictor = Predictor.from_bundle(bundle, torch.device("cpu"))
    case = load_case(discover_cases(small_release)[0])
    plain = predictor.network_probability(case)
    expected = refiner.refine(plain, to_xyz_array(case.adc), to_xyz_array(case.zadc), case.adc.GetSpacing())
    np.testing.assert_array_equal(predictor.probability(case), expected)
    assert not np.array_equal(expected, plain)
    unrefined = Predictor.from_bundle(bundle, torch.device("cpu"), refine=False)
    np.testing.assert_array_equal(unrefined.probability(case), plain)


def case_of(example: RefinementExample, name: str) -> CaseImages:
    def image(array: np.ndarray) -> sitk.Image:
        result = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        result.SetSpacing(example.spacing)
        return result

    files = CaseFiles(name, Path(f"{name}-adc.mha"), Path(f"{name}-z.mha"), Path(f"{name}-label.mha"))
    return CaseImages(files=files, adc=image(example.adc.astype(np.float32)),
                      zadc=image(example.zadc.astype(np.float32)), label=image(example.label))


def test_cross_fitted_refinement_beats_an_uninformative_probability() -> None:
    examples = [z_marked_example(seed) for seed in range(4)]
    maps = [(example, case_of(example, f"case{seed}")) for seed, example in enumerate(examples)]
    settings = TuningConfig(thresholds=(0.5,), min_component_mm3=(0.0,), empty_fallback_probability=(0.0,),
                            refinement_neighbourhood_mm=1.0)
    (refined,) = refinement_candidates(maps, settings)
    assert refined.settings == PostProcessing(0.5, 0.0, 0.0, False, True)
    assert refined.dice > 0.95  # the plain 0.3 probability gives an empty mask: Dice 0
    assert refinement_candidates(maps[:3], settings) == []  # too few cases to cross-fit


def test_tuning_writes_the_refiner_only_when_chosen(tmp_path: Path) -> None:
    config = tiny_config()
    config.save(tmp_path / CONFIG_FILENAME)
    refined = Candidate(PostProcessing(0.5, 0.0, 0.0, False, True), dice=0.7, masd_mm=2.0, nsd=0.8)
    refiner = refiner_of((0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    apply_tuning(config, tmp_path, TuningResult(chosen=refined, best_plain=refined, best_tta=None,
                                                candidates=[refined], case_ids=["a"], best_refined=refined,
                                                refiner=refiner))
    assert ExperimentConfig.load(tmp_path / CONFIG_FILENAME).inference.refine
    assert load_refiner(tmp_path) == refiner
    assert json.loads((tmp_path / TUNING_JSON).read_text())["best_refined"]["refine"] is True
    plain = Candidate(PostProcessing(0.5, 0.0, 0.0, False), dice=0.6, masd_mm=2.0, nsd=0.8)
    apply_tuning(config, tmp_path, TuningResult(chosen=plain, best_plain=plain, best_tta=None, candidates=[plain],
                                                case_ids=["a"], best_refined=refined))
    assert not ExperimentConfig.load(tmp_path / CONFIG_FILENAME).inference.refine
    assert not (tmp_path / REFINEMENT_FILENAME).exists()  # a stale refiner never outlives its choice
