import dataclasses
import json
from pathlib import Path

import pytest

from hieseg.config.settings import ExperimentConfig
from hieseg.errors import ConfigError


def test_round_trip_keeps_every_value_and_tuple_types(tmp_path: Path) -> None:
    config = ExperimentConfig().with_overrides({"train.patch_size": [64, 64, 16], "loss.name": "dice"})
    path = tmp_path / "config.json"
    config.save(path)
    loaded = ExperimentConfig.load(path)
    assert loaded == config
    assert loaded.train.patch_size == (64, 64, 16)
    assert isinstance(loaded.unet.channels, tuple)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'"):
        ExperimentConfig().with_overrides({"train.epoch": 3})
    data = ExperimentConfig().to_dict()
    data["network"]["chanels"] = [1]
    with pytest.raises(ValueError, match="chanels"):
        ExperimentConfig.from_dict(data)


def test_unreadable_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=str(path)):
        ExperimentConfig.load(path)


def test_other_format_version_is_refused() -> None:
    data = ExperimentConfig().to_dict()
    data["format_version"] = 99
    with pytest.raises(ValueError, match=r"format_version 99 is not supported \(expected 1 to 4\)"):
        ExperimentConfig.from_dict(data)


def test_format_2_weights_keep_the_network_grid_normalisation_and_new_ones_normalise_natively() -> None:
    data = ExperimentConfig().to_dict()
    assert data["format_version"] == 4 and data["preprocess"]["normalization"] == "native"
    del data["preprocess"]["normalization"]
    version_2 = {**data, "format_version": 2}
    assert ExperimentConfig.from_dict(version_2).preprocess.normalization == "network_grid"
    without_section = {key: value for key, value in version_2.items() if key != "preprocess"}
    assert ExperimentConfig.from_dict(without_section).preprocess.normalization == "network_grid"
    assert ExperimentConfig.from_dict(data).preprocess.normalization == "native"
    with pytest.raises(ConfigError, match="preprocess.normalization: must be one of native, network_grid"):
        ExperimentConfig().with_overrides({"preprocess.normalization": "z"})


def test_format_3_weights_keep_a_z_scored_zadc_and_centred_is_a_choice() -> None:
    data = ExperimentConfig().with_overrides({"preprocess.zadc_normalization": "centred"}).to_dict()
    assert ExperimentConfig.from_dict(data).preprocess.zadc_normalization == "centred"
    del data["preprocess"]["zadc_normalization"]
    version_3 = {**data, "format_version": 3}
    assert ExperimentConfig.from_dict(version_3).preprocess.zadc_normalization == "z_score"
    assert ExperimentConfig.from_dict(version_3).preprocess.normalization == "native"
    version_2 = {**data, "format_version": 2}
    del version_2["preprocess"]
    migrated = ExperimentConfig.from_dict(version_2).preprocess
    assert (migrated.normalization, migrated.zadc_normalization) == ("network_grid", "z_score")
    with pytest.raises(ConfigError, match="preprocess.zadc_normalization: must be one of z_score, centred"):
        ExperimentConfig().with_overrides({"preprocess.zadc_normalization": "raw"})


@pytest.mark.parametrize("key, value, message", [
    ("inference.threshold", "high", 'inference.threshold: expected a number, got "high"'),
    ("inference.threshold", float("nan"), "inference.threshold: expected a finite number, got NaN"),
    ("inference.threshold", -1, "inference.threshold: must be in (0, 1), got -1.0"),
    ("inference.threshold", 1.5, "inference.threshold: must be in (0, 1), got 1.5"),
    ("inference.min_component_mm3", -1, "inference.min_component_mm3: must be >= 0"),
    ("inference.blend_mode", "linear", "inference.blend_mode: must be one of gaussian, constant"),
    ("train.epochs", 2.5, "train.epochs: expected a whole number, got 2.5"),
    ("train.amp", 1, "train.amp: expected true or false, got 1"),
    ("train.seed", -1, "train.seed: must be in [0, 4294967295]"),
    ("train.fold", 5, "train.fold: must be in [0, 4] for 5 folds, got 5"),
    ("train.patch_size", [64, 64], "train.patch_size: expected a list of 3 whole numbers, got [64, 64]"),
    ("train.torch_threads", -1, "train.torch_threads: must be >= 0"),
    ("preprocess.target_spacing", [1, 0, 1], "preprocess.target_spacing: each value must be > 0, got [1.0, 0.0, 1.0]"),
    ("unet.strides", [2, 2], "unet.strides: one stride per down-sampling step, so 3 for 4 channel levels, got 2"),
    ("unet.norm", "group", "unet.norm: must be one of instance, batch"),
    ("loss.name", "bce", "loss.name: must be one of dice, dicefocal"),
    ("augment.flip_prob", 1.5, "augment.flip_prob: must be in [0, 1]"),
    ("tuning.thresholds", [], "tuning.thresholds: expected a list of one or more numbers, got []"),
    ("tuning.thresholds", [0.5, 1.0], "tuning.thresholds: each value must be in (0, 1), got [0.5, 1.0]"),
    ("tuning.min_component_mm3", [0, -10], "tuning.min_component_mm3: each value must be >= 0"),
])
def test_every_setting_is_checked_when_the_config_is_built(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ExperimentConfig().with_overrides({key: value})
    assert message in str(excinfo.value)


def test_values_are_normalised_to_their_types_and_an_unset_grid_is_allowed() -> None:
    config = ExperimentConfig().with_overrides({
        "inference.min_component_mm3": 10, "tuning.thresholds": [0.4, 0.6], "preprocess.target_spacing": None,
    })
    assert config.inference.min_component_mm3 == 10.0 and isinstance(config.inference.min_component_mm3, float)
    assert config.tuning.thresholds == (0.4, 0.6)
    assert config.preprocess.target_spacing is None


def test_a_section_changed_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="inference.threshold"):
        dataclasses.replace(ExperimentConfig().inference, threshold=float("nan"))


def test_a_bad_value_in_a_file_names_the_file_and_the_setting(tmp_path: Path) -> None:
    data = ExperimentConfig().to_dict()
    data["train"]["epochs"] = "ten"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f'{path}: invalid configuration: train.epochs: expected a whole number'):
        ExperimentConfig.load(path)
