"""Preprocessing is invertible to the native grid, and training patches over-sample lesions."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import tiny_config
from monai.data import MetaTensor
from monai.transforms import Compose

from hieseg.data.transforms import (
    BRAIN,
    IMAGE,
    LABEL,
    LESION_INDEX_COUNT,
    SAMPLING,
    NormalizeNatived,
    SamplingClassesd,
    balanced_lesion_indices,
    case_to_dict,
    inference_transforms,
    invert_to_native,
    normalised_channels,
    preprocess_transforms,
    training_transforms,
)
from hieseg.errors import ConfigError
from hieseg.io.layout import CaseFiles, CaseImages, discover_cases, load_case


@pytest.fixture(scope="module")
def case(small_release: Path):
    return load_case(discover_cases(small_release)[0])


def test_network_grid_normalisation_z_scores_the_resampled_brain(case) -> None:
    config = tiny_config(**{"preprocess.normalization": "network_grid"})
    network_input = inference_transforms(config)(case_to_dict(case))[IMAGE]
    assert network_input.shape[0] == 2
    assert np.allclose(network_input.pixdim.numpy(), config.preprocess.target_spacing, atol=1e-4)
    brain = network_input[0] != 0
    for channel in network_input:
        inside = channel[brain]
        assert abs(float(inside.mean())) < 0.1 and abs(float(inside.std()) - 1.0) < 0.1


def test_native_normalisation_z_scores_the_acquired_brain_and_records_it(case) -> None:
    data = case_to_dict(case)
    native_brain = data[IMAGE][0] > 0
    normalised = NormalizeNatived()(data)
    for channel, raw in zip(normalised[IMAGE], data[IMAGE]):
        inside = raw[native_brain].double()
        expected = (inside - inside.mean()) / inside.std(unbiased=False)
        assert torch.allclose(channel[native_brain].double(), expected, atol=1e-5)
        assert not channel[~native_brain].any()
    assert torch.equal(normalised[BRAIN][0], native_brain.float())


def test_centred_zadc_keeps_its_units_and_loses_only_the_brain_median() -> None:
    """Two brains with the same lesion (Z_ADC -5) on atlases of different quality (healthy Z_ADC +/-0.5 or
    +/-1.5, the second also offset by +0.4): centred, the lesion reads -5 on both (minus the offset); z-scored,
    it reads deeper on the good atlas. The ADC is z-scored either way."""
    brain = torch.tensor([True] * 7 + [False])
    adc = torch.tensor([500.0, 1000.0, 1100.0, 900.0, 1000.0, 1050.0, 950.0, 0.0])
    good = torch.stack([adc, torch.tensor([-5.0, -0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 0.0])])
    poor = torch.stack([adc, torch.tensor([-5.0, -1.5, 1.5, -1.5, 1.5, 0.0, 0.0, 0.0]) + 0.4 * brain])
    for zadc in (good, poor):
        centred = normalised_channels(zadc, brain, "centred")
        assert torch.allclose(centred[1], (zadc[1] - zadc[1][brain].median()) * brain)
        inside = adc[brain]
        assert torch.allclose(centred[0][brain], (inside - inside.mean()) / inside.std(unbiased=False))
        assert centred[0][7] == centred[1][7] == 0
    assert float(normalised_channels(good, brain, "centred")[1][0]) == -5.0
    assert float(normalised_channels(poor, brain, "centred")[1][0]) == pytest.approx(-5.0)
    good_z, poor_z = (float(normalised_channels(x, brain, "z_score")[1][0]) for x in (good, poor))
    assert good_z < poor_z - 0.3
    with pytest.raises(ValueError, match="preprocess.zadc_normalization must be one of z_score, centred"):
        normalised_channels(good, brain, "raw")


def box_case(slice_mm: float) -> dict:
    """A 40 x 40 x 40 mm brain box (ADC 1000, Z_ADC 0) with a 10 mm lesion cube in its middle (ADC 500,
    Z_ADC -5), on a 1 x 1 x ``slice_mm`` mm grid with 10 mm of background around it."""
    shape = (60, 60, round(60 / slice_mm))
    adc, zadc = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    z = slice(round(10 / slice_mm), round(50 / slice_mm))
    adc[10:50, 10:50, z] = 1000.0
    lesion_z = slice(round(25 / slice_mm), round(35 / slice_mm))
    adc[25:35, 25:35, lesion_z], zadc[25:35, 25:35, lesion_z] = 500.0, -5.0
    affine = torch.diag(torch.tensor([1.0, 1.0, slice_mm, 1.0], dtype=torch.float64))
    return {IMAGE: MetaTensor(np.stack([adc, zadc]), affine=affine), "case_id": "box"}


@pytest.mark.parametrize("slice_mm", [2.0, 5.0])
def test_lesion_contrast_on_the_network_grid_does_not_depend_on_the_brain_edge(slice_mm: float) -> None:
    """The lesion centre keeps its native z-score with native normalisation, whatever the slices; measured on
    the network grid, the edge voxels blended with the background shift it, more for thicker slices."""
    adc = box_case(slice_mm)[IMAGE][0].numpy()
    fraction = np.count_nonzero(adc == 500) / np.count_nonzero(adc > 0)  # lesion share of the native brain
    mean, std = 1000 - 500 * fraction, 500 * np.sqrt(fraction * (1 - fraction))
    native_z = (500 - mean) / std

    def lesion_centre(normalization: str) -> float:
        config = tiny_config(**{"preprocess.normalization": normalization,
                                "preprocess.target_spacing": (1.0, 1.0, 1.0)})
        data = box_case(slice_mm)
        grid = Compose(preprocess_transforms(config.preprocess, with_label=False))(data)[IMAGE]
        return float(grid[0, 30, 30, 30])

    assert lesion_centre("native") == pytest.approx(native_z, rel=1e-3)
    assert abs(lesion_centre("network_grid") - native_z) > 0.05 * abs(native_z)


def test_prediction_returns_exactly_to_the_native_grid(case) -> None:
    config = tiny_config()
    transforms = inference_transforms(config)
    network_input = transforms(case_to_dict(case))[IMAGE]
    brain_on_network_grid = (network_input[:1] != 0).float()
    native = invert_to_native(brain_on_network_grid, network_input, transforms)
    assert tuple(native.shape[1:]) == case.adc.GetSize()
    truth = torch.from_numpy(case_to_dict(case)[IMAGE][0].numpy() > 0)
    agreement = float(((native[0] > 0.5) == truth).float().mean())
    assert agreement > 0.97, "resampled brain mask must land back where the brain is"


def test_inversion_is_exact_when_no_resampling_is_needed(case) -> None:
    config = tiny_config(**{"preprocess.target_spacing": tuple(case.adc.GetSpacing())})
    transforms = inference_transforms(config)
    network_input = transforms(case_to_dict(case))[IMAGE]
    assert network_input.shape[1:] != tuple(case.adc.GetSize()), "the brain crop must shrink the volume"
    native = invert_to_native((network_input[:1] != 0).float(), network_input, transforms)
    truth = case_to_dict(case)[IMAGE][0].numpy() > 0
    assert np.array_equal(native[0].numpy() > 0.5, truth)


def test_training_patches_have_the_patch_size_and_oversample_lesions(small_release: Path) -> None:
    config = tiny_config(**{"train.samples_per_case": 8, "train.lesion_fraction": 0.75})
    transform = training_transforms(config)
    transform.set_random_state(seed=0)
    cases = [load_case(f) for f in discover_cases(small_release)]
    with_lesion = [c for c in cases if c.label is not None and np.asarray(case_to_dict(c)[LABEL]).any()]
    hits, total = 0, 0
    for lesion_case in with_lesion[:3]:
        for sample in transform(case_to_dict(lesion_case)):
            assert tuple(sample[IMAGE].shape) == (2, *config.train.patch_size)
            assert tuple(sample[LABEL].shape) == (1, *config.train.patch_size)
            hits += int(sample[LABEL].sum() > 0)
            total += 1
    assert hits / total >= 0.6, f"only {hits}/{total} patches contain lesion"


NO_AUGMENTATION = {f"augment.{name}": 0.0 for name in (
    "flip_prob", "rotate90_prob", "affine_prob", "elastic_prob", "noise_prob", "blur_prob", "gamma_prob", "lowres_prob",
    "intensity_prob")}


def blank_brain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADC 1500, Z_ADC 0 and an empty label over a 128 x 128 x 16 brain, axes (x, y, z)."""
    shape = (128, 128, 16)
    return np.full(shape, 1500.0, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.uint8)


def tiny_grid_case(case_id: str, adc: np.ndarray, zadc: np.ndarray, label: np.ndarray) -> CaseImages:
    """A case of (x, y, z) arrays at the tiny grid's spacing (2 x 2 x 4 mm)."""
    images = []
    for array in (adc, zadc, label):
        image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
        image.SetSpacing((2.0, 2.0, 4.0))
        images.append(image)
    return CaseImages(CaseFiles(case_id, Path("a"), Path("z"), Path("l")), *images)


def mimic_case() -> CaseImages:
    """A 128 x 128 x 16 brain at the tiny grid's spacing: a lesion (Z_ADC -4) near one corner, a lesion mimic
    (Z_ADC -4, no label) near the opposite one, a second low spot 4 mm from the lesion, Z_ADC 0 elsewhere."""
    adc, zadc, label = blank_brain()
    label[10:14, 10:14, 6:9] = 1
    zadc[label == 1] = -4.0
    zadc[110:114, 110:114, 6:9] = -4.0
    zadc[16, 10:14, 6:9] = -4.0
    return tiny_grid_case("MIMIC_001", adc, zadc, label)


def test_sampling_classes_mark_the_lesion_and_the_mimics_far_from_it() -> None:
    config = tiny_config(**{"train.mimic_fraction": 0.2})
    data = Compose(preprocess_transforms(config.preprocess, with_label=True) + [
        SamplingClassesd(config.train, config.preprocess.target_spacing)])(case_to_dict(mimic_case()))
    classes = data[SAMPLING][0].numpy()
    label = data[LABEL][0].numpy() > 0
    assert np.array_equal(classes == 1, label)
    mimic = np.argwhere(classes == 2)
    assert len(mimic) == 4 * 4 * 3 and mimic[:, 0].min() > 64  # the far spot only: the near one is the lesion's rim
    assert not ((classes > 0) & (data[BRAIN][0].numpy() == 0)).any()


@pytest.mark.parametrize(("lesion", "mimic"), [(0.0, 1.0), (0.5, 0.5)])
def test_mimic_patches_are_centred_on_the_mimic(lesion: float, mimic: float) -> None:
    config = tiny_config(**{"train.samples_per_case": 12, "train.lesion_fraction": lesion,
                            "train.mimic_fraction": mimic, **NO_AUGMENTATION})
    transform = training_transforms(config)
    transform.set_random_state(seed=0)
    samples = transform(case_to_dict(mimic_case()))
    holds_mimic = [bool((s[IMAGE][1] < -2).any()) and not s[LABEL].any() for s in samples]
    holds_lesion = [bool(s[LABEL].any()) for s in samples]
    assert all(m or les for m, les in zip(holds_mimic, holds_lesion))
    assert sum(holds_mimic) == (12 if mimic == 1.0 else sum(not les for les in holds_lesion)) > 0
    assert SAMPLING not in samples[0] and BRAIN not in samples[0]


def test_lesion_and_mimic_shares_may_not_exceed_one() -> None:
    with pytest.raises(ConfigError, match="lesion_fraction \\+ train.mimic_fraction must be at most 1"):
        tiny_config(**{"train.lesion_fraction": 0.8, "train.mimic_fraction": 0.3})


def two_lesion_case() -> CaseImages:
    """A 128 x 128 x 16 brain at the tiny grid's spacing with a large lesion (12 x 12 x 6 voxels) near one corner and a
    small one (2 x 2 x 1) near the opposite corner, both Z_ADC -4."""
    adc, zadc, label = blank_brain()
    label[8:20, 8:20, 5:11] = 1
    label[110:112, 110:112, 8] = 1
    zadc[label == 1] = -4.0
    return tiny_grid_case("TWO_001", adc, zadc, label)


def test_balanced_lesion_indices_give_every_lesion_the_same_count_of_its_own_voxels() -> None:
    lesion = np.zeros((30, 30, 10), dtype=bool)
    lesion[2:22, 2:22, 1:9] = True
    lesion[26:28, 26, 5] = True
    lesion[28, 27, 6] = True  # touches the small lesion by a corner: the same lesion
    indices = balanced_lesion_indices(lesion)
    labels = np.zeros(lesion.shape, dtype=int)
    labels[2:22, 2:22, 1:9], labels[26:28, 26, 5], labels[28, 27, 6] = 1, 2, 2
    drawn = labels.ravel()[indices]
    assert (drawn > 0).all()
    assert (drawn == 1).sum() == (drawn == 2).sum() == LESION_INDEX_COUNT
    assert set(indices[drawn == 2]) == set(np.flatnonzero(labels == 2))
    assert balanced_lesion_indices(np.zeros((4, 4, 4), dtype=bool)).size == 0


@pytest.mark.parametrize(("sampling", "small_share"), [("voxel", (0.0, 0.1)), ("lesion", (0.35, 0.65))])
def test_lesion_sampling_draws_each_lesion_alike(sampling: str, small_share: tuple[float, float]) -> None:
    config = tiny_config(**{"train.samples_per_case": 60, "train.lesion_fraction": 1.0,
                            "train.lesion_sampling": sampling, **NO_AUGMENTATION})
    transform = training_transforms(config)
    transform.set_random_state(seed=0)
    samples = transform(case_to_dict(two_lesion_case()))
    with_small = sum(int(s[LABEL].sum()) <= 4 for s in samples)
    assert all(s[LABEL].any() for s in samples)
    assert small_share[0] <= with_small / len(samples) <= small_share[1]
    assert SAMPLING not in samples[0] and BRAIN not in samples[0]
