from pathlib import Path

import pytest

from hieseg.config import ExperimentConfig


def test_round_trip_keeps_every_value_and_tuple_types(tmp_path: Path) -> None:
    config = ExperimentConfig().with_overrides({"train.patch_size": [64, 64, 16], "loss.name": "dice"})
    path = tmp_path / "config.json"
    config.save(path)
    loaded = ExperimentConfig.load(path)
    assert loaded == config
    assert loaded.train.patch_size == (64, 64, 16)
    assert isinstance(loaded.network.channels, tuple)


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
    with pytest.raises(ValueError, match="format_version 99"):
        ExperimentConfig.from_dict(data)
