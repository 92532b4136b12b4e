"""The network grid derived from the data (nnU-Net's rule) and saved resolved with the weights."""

from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from conftest import tiny_config

from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.data.spacing import data_target_spacing, with_data_spacing
from hieseg.io.layout import adc_path, discover_cases
from hieseg.training.trainer import train


def test_median_per_axis_for_mildly_anisotropic_data() -> None:
    spacings = [(0.8, 0.8, 2.0), (1.0, 1.0, 2.5), (1.4, 1.4, 3.0), (1.2, 1.1, 6.0)]
    assert data_target_spacing(spacings) == (1.1, 1.05, 2.75)


def test_strongly_anisotropic_axis_takes_its_10th_percentile() -> None:
    spacings = [(0.5, 0.5, 2.0), (0.5, 0.5, 4.0), (0.5, 0.5, 5.0), (0.5, 0.5, 6.0)]
    # median z 4.5 > 3 x 0.5, so z takes the 10th percentile of (2, 4, 5, 6): 2 + 0.3 * (4 - 2) = 2.6
    assert data_target_spacing(spacings) == (0.5, 0.5, 2.6)


def test_percentile_is_never_finer_than_the_other_axes() -> None:
    spacings = [(1.0, 1.0, 0.9), (1.0, 1.0, 3.5), (1.0, 1.0, 3.6), (1.0, 1.0, 3.7)]
    assert data_target_spacing(spacings)[2] >= 1.0


def test_a_lower_percentile_keeps_the_finer_acquisitions() -> None:
    spacings = [(0.6, 0.6, 1.8), (0.9, 0.9, 3.5), (1.0, 1.0, 4.0), (1.2, 1.2, 6.0), (1.4, 1.4, 7.0)]
    # 10th percentile of x: 0.6 + 0.4 * (0.9 - 0.6) = 0.72; z's 10th percentile 1.8 + 0.4 * 1.7 = 2.48
    assert data_target_spacing(spacings, 10.0) == (0.72, 0.72, 2.48)
    # the median, 1.0 x 1.0 x 4.0, is anisotropic (4 > 3 x 1): z takes its 10th percentile there too
    assert data_target_spacing(spacings) == (1.0, 1.0, 2.48)
    assert data_target_spacing(spacings, 0.0) == (0.6, 0.6, 1.8)


def test_the_configured_percentile_resolves_the_grid() -> None:
    config = ExperimentConfig().with_overrides({"preprocess.spacing_percentile": 0.0})
    resolved = with_data_spacing(config, [(0.5, 0.5, 2.0), (1.0, 1.0, 2.0), (2.0, 2.0, 3.0)])
    assert resolved.preprocess.target_spacing == (0.5, 0.5, 2.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="one \\(x, y, z\\) spacing per case"):
        data_target_spacing([])


def test_explicit_spacing_is_kept_and_unset_spacing_is_resolved() -> None:
    explicit = tiny_config()
    assert with_data_spacing(explicit, [(1.0, 1.0, 1.0)]) is explicit
    unset = ExperimentConfig()
    assert unset.preprocess.target_spacing is None
    assert with_data_spacing(unset, [(1.0, 1.0, 2.0), (2.0, 2.0, 3.0)]).preprocess.target_spacing == (1.5, 1.5, 2.5)


def test_training_saves_the_grid_derived_from_every_case(small_release: Path, small_cases: list, tmp_path: Path) -> None:
    config = tiny_config(**{"preprocess.target_spacing": None, "train.epochs": 1, "train.steps_per_epoch": 1,
                            "tuning.enabled": False})
    train(config, small_cases, tmp_path, device=torch.device("cpu"), progress=False)
    spacings = [sitk.ReadImage(str(adc_path(small_release, f.case_id))).GetSpacing()
                for f in discover_cases(small_release)]
    saved = ExperimentConfig.load(tmp_path / CONFIG_FILENAME)
    assert saved.preprocess.target_spacing == data_target_spacing(spacings)


def test_prediction_refuses_a_config_without_a_grid() -> None:
    from hieseg.data.transforms import inference_transforms

    with pytest.raises(ValueError, match="target_spacing is unset"):
        inference_transforms(ExperimentConfig())
