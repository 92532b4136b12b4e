"""Preprocessing is invertible to the native grid, and training patches over-sample lesions."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from hieseg.data.transforms import (
    IMAGE,
    LABEL,
    case_to_dict,
    inference_transforms,
    invert_to_native,
    training_transforms,
)
from hieseg.io.layout import discover_cases, load_case


@pytest.fixture(scope="module")
def case(small_release: Path):
    return load_case(discover_cases(small_release)[0])


def test_network_input_is_two_normalised_channels_on_the_target_spacing(case) -> None:
    config = tiny_config()
    network_input = inference_transforms(config)(case_to_dict(case))[IMAGE]
    assert network_input.shape[0] == 2
    assert np.allclose(network_input.pixdim.numpy(), config.preprocess.target_spacing, atol=1e-4)
    brain = network_input[0] != 0
    for channel in network_input:
        inside = channel[brain]
        assert abs(float(inside.mean())) < 0.1 and abs(float(inside.std()) - 1.0) < 0.1


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
