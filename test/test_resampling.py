"""The fast inversion of the resampling equals MONAI's inverse over the whole grid."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hieseg.data.transforms import invert_to_native
from hieseg.inference.predictor import Predictor
from hieseg.io.layout import CaseFiles, CaseImages
from hieseg.model.weights import load_bundle
from hieseg.synthesis.generator import make_case


@pytest.fixture(scope="module")
def tiny_predictor(untrained_model_dir: Path) -> Predictor:
    return Predictor.from_bundle(load_bundle(untrained_model_dir, torch.device("cpu")), torch.device("cpu"))


@pytest.mark.parametrize("seed", [0, 2])
def test_inverting_only_the_brain_box_equals_monai_inverting_the_whole_grid(
    tiny_predictor: Predictor, seed: int
) -> None:
    synthetic = make_case("inversion", seed, size=(128, 128, 24))
    case = CaseImages(CaseFiles("inversion", Path(), Path(), None), synthetic.adc, synthetic.zadc, None)
    network_input = tiny_predictor.preprocess(case)
    probability = tiny_predictor.predict(network_input)
    fast = tiny_predictor.to_native(probability, network_input)
    again = tiny_predictor.to_native(probability, network_input)
    whole = invert_to_native(probability, network_input, tiny_predictor.transforms)[0].numpy()
    assert fast.shape == synthetic.adc.GetSize()
    np.testing.assert_allclose(fast, whole, atol=1e-6)
    np.testing.assert_array_equal(fast, again)


def test_an_all_zero_prediction_inverts_to_zeros(tiny_predictor: Predictor) -> None:
    synthetic = make_case("zeros", 1, size=(96, 96, 20))
    case = CaseImages(CaseFiles("zeros", Path(), Path(), None), synthetic.adc, synthetic.zadc, None)
    network_input = tiny_predictor.preprocess(case)
    native = tiny_predictor.to_native(torch.zeros((1, *network_input.shape[1:])), network_input)
    assert native.shape == synthetic.adc.GetSize() and not native.any()
