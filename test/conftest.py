"""Shared fixtures: small synthetic cases on disk and a tiny, fast configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from hieseg.config import ExperimentConfig
from hieseg.synthetic import write_release

SMALL_SIZE = (96, 96, 20)


def tiny_config(**overrides: object) -> ExperimentConfig:
    """A configuration small enough to train and predict in seconds on a CPU."""
    base = {
        "preprocess.target_spacing": (2.0, 2.0, 4.0),
        "network.channels": (8, 16, 32),
        "network.strides": (2, 2),
        "network.num_res_units": 1,
        "network.dropout": 0.0,
        "train.patch_size": (48, 48, 16),
        "train.batch_size": 2,
        "train.samples_per_case": 2,
        "train.epochs": 2,
        "train.validate_every": 1,
        "train.warmup_epochs": 0,
        "train.num_workers": 0,
        "train.folds": 4,
        "inference.roi_size": (48, 48, 16),
    }
    base.update(overrides)
    return ExperimentConfig().with_overrides(base)


@pytest.fixture(scope="session")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight small synthetic cases in the public release layout (read-only for tests)."""
    root = tmp_path_factory.mktemp("release")
    write_release(root, n_cases=8, seed=3, sizes=SMALL_SIZE)
    return root


@pytest.fixture(scope="session")
def untrained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with the tiny configuration and one randomly initialised network."""
    import torch

    from hieseg.config import CONFIG_FILENAME
    from hieseg.network import build_network

    folder = tmp_path_factory.mktemp("model")
    config = tiny_config()
    config.save(folder / CONFIG_FILENAME)
    torch.manual_seed(0)
    torch.save(build_network(config.network).state_dict(), folder / "fold0.pt")
    return folder
