"""Shared fixtures: small synthetic cases on disk, a tiny, fast configuration, a container's folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hieseg.config.settings import ExperimentConfig
from hieseg.synthesis.generator import make_case, write_container_case, write_release
from hieseg.training.trainer import Trainer

SMALL_SIZE = (96, 96, 20)
UUID = "1b2c3d4e-0000-4000-8000-000000000001"


def tiny_config(**overrides: object) -> ExperimentConfig:
    """A configuration small enough to train and predict in seconds on a CPU."""
    base = {
        "preprocess.target_spacing": (2.0, 2.0, 4.0),
        "unet.channels": (8, 16, 32),
        "unet.strides": (2, 2),
        "unet.num_res_units": 1,
        "unet.dropout": 0.0,
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


def run_interrupted(config: ExperimentConfig, cases: list, out: Path, monkeypatch: pytest.MonkeyPatch,
                    completed: int = 1) -> None:
    """Train ``config`` until the end of epoch ``completed``'s checkpoint, then stop as Ctrl-C would before the next."""
    real_epoch = Trainer.train_epoch
    calls = {"n": 0}

    def interrupted_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == completed + 1:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, cases, out, device=torch.device("cpu"), progress=False).fit()
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)


@pytest.fixture(scope="session")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight small synthetic cases in the public release layout (read-only for tests)."""
    root = tmp_path_factory.mktemp("release")
    write_release(root, n_cases=8, seed=3, sizes=SMALL_SIZE)
    return root


@pytest.fixture(scope="session")
def small_cases(small_release: Path) -> list:
    """The cases of ``small_release``, read once (training takes them in memory)."""
    from hieseg.training.data import load_cases

    return load_cases([small_release], progress=False)


@pytest.fixture(scope="session")
def untrained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with the tiny configuration and one randomly initialised network."""
    import torch

    from hieseg.config.settings import CONFIG_FILENAME
    from hieseg.model.network import build_network

    folder = tmp_path_factory.mktemp("model")
    config = tiny_config()
    config.save(folder / CONFIG_FILENAME)
    torch.manual_seed(0)
    torch.save(build_network(config).state_dict(), folder / "fold0.pt")
    return folder


@pytest.fixture
def container(tmp_path: Path, untrained_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A one-case /input, an empty /output and a weights folder, wired through the environment."""
    paths = {"input": tmp_path / "input", "output": tmp_path / "output", "model": untrained_model_dir}
    write_container_case(paths["input"], make_case("CASE", seed=5, size=SMALL_SIZE), UUID)
    paths["output"].mkdir()
    monkeypatch.setenv("HIESEG_INPUT", str(paths["input"]))
    monkeypatch.setenv("HIESEG_OUTPUT", str(paths["output"]))
    monkeypatch.setenv("HIESEG_MODEL", str(paths["model"]))
    monkeypatch.setenv("HIESEG_DEVICE", "cpu")
    return paths


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (hidden temporary files included), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def rewrite(path: Path, array: np.ndarray | None = None, **geometry: tuple) -> None:
    """Rewrite an image file with another voxel array and/or geometry (``Origin=(...)``, ``Spacing=...``)."""
    image = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) if array is None else array)
    new.CopyInformation(image)
    for name, value in geometry.items():
        getattr(new, f"Set{name}")(value)
    sitk.WriteImage(new, str(path))


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder path in which no file can be created, for this user (root ignores permission bits)."""
    if os.geteuid() == 0:
        if not Path("/sys").is_dir() or _can_create_in(Path("/sys")):
            pytest.skip("running as root without a folder that refuses new files (/sys)")
        return Path("/sys/hieseg-unwritable")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked / "out"


def _can_create_in(folder: Path) -> bool:
    try:
        (folder / ".hieseg-probe").touch()
    except OSError:
        return False
    (folder / ".hieseg-probe").unlink()
    return True
