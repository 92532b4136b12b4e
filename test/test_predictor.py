"""Loading weights folders and whole-case prediction on the native grid."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from hieseg.config.settings import CONFIG_FILENAME
from hieseg.errors import ModelError
from hieseg.inference.predictor import Predictor
from hieseg.io.layout import discover_cases, load_case
from hieseg.model.network import build_network
from hieseg.model.weights import load_bundle


@pytest.fixture(scope="module")
def case(small_release: Path):
    return load_case(discover_cases(small_release)[1])


def test_mask_has_the_native_size_and_is_binary(untrained_model_dir: Path, case) -> None:
    bundle = load_bundle(untrained_model_dir, torch.device("cpu"))
    predictor = Predictor.from_bundle(bundle, torch.device("cpu"))
    mask = predictor.mask(case)
    assert mask.shape == case.adc.GetSize() and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    image = predictor.mask_image(case)
    assert image.GetSpacing() == case.adc.GetSpacing() and image.GetOrigin() == case.adc.GetOrigin()
    assert image.GetDirection() == case.adc.GetDirection()


def test_ensemble_averages_the_probabilities_of_its_members(untrained_model_dir: Path, case) -> None:
    config = tiny_config()
    torch.manual_seed(1)
    other = build_network(config).eval()
    bundle = load_bundle(untrained_model_dir, torch.device("cpu"))
    first = Predictor(config, bundle.networks, torch.device("cpu")).probability(case)
    second = Predictor(config, [other], torch.device("cpu")).probability(case)
    both = Predictor(config, [bundle.networks[0], other], torch.device("cpu")).probability(case)
    assert not np.allclose(first, second)
    assert np.allclose(both, (first + second) / 2, atol=1e-5)


def test_flip_tta_changes_the_untrained_prediction_but_keeps_it_a_probability(untrained_model_dir: Path, case) -> None:
    bundle = load_bundle(untrained_model_dir, torch.device("cpu"))
    plain = Predictor.from_bundle(bundle, torch.device("cpu")).probability(case)
    tta = Predictor.from_bundle(bundle, torch.device("cpu"), tta_flips=True).probability(case)
    assert tta.shape == plain.shape
    assert 0.0 <= tta.min() and tta.max() <= 1.0
    assert not np.allclose(tta, plain)


def test_missing_config_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json: missing"):
        load_bundle(tmp_path, torch.device("cpu"))


def test_folder_without_weights_is_reported(untrained_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(untrained_model_dir / CONFIG_FILENAME, tmp_path / CONFIG_FILENAME)
    with pytest.raises(ModelError, match=r"no weight files \(\*.pt\)"):
        load_bundle(tmp_path, torch.device("cpu"))


def test_weights_that_do_not_fit_the_config_are_reported(untrained_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(untrained_model_dir / CONFIG_FILENAME, tmp_path / CONFIG_FILENAME)
    bigger = tiny_config(**{"unet.channels": (8, 16, 64)})
    torch.save(build_network(bigger).state_dict(), tmp_path / "fold0.pt")
    with pytest.raises(ModelError, match=r"fold0.pt: incompatible with the network of config.json: 0 missing, "
                                         r"0 unexpected and \d+ differently shaped tensor\(s\); e.g. .* has shape "
                                         r"64 x 16 x 3 x 3 x 3 in the file and 32 x 16 x 3 x 3 x 3 in the network"):
        load_bundle(tmp_path, torch.device("cpu"))
    (tmp_path / "fold0.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"fold0.pt: unreadable weights file \(7 bytes\)") as excinfo:
        load_bundle(tmp_path, torch.device("cpu"))
    assert "weights_only" not in str(excinfo.value)
