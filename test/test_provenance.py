"""Provenance of weights: recorded by training, kept by tuning, checked (never refused) by loading."""

import dataclasses
import json
import logging
import shutil
import subprocess
from pathlib import Path

import monai
import pytest
import SimpleITK as sitk
import torch
from conftest import tiny_config

import hieseg
from hieseg.config.overrides import build_config
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig, ProvenanceConfig
from hieseg.model.provenance import current_provenance
from hieseg.model.weights import load_bundle
from hieseg.runtime.versions import git_state
from hieseg.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
OLD = ProvenanceConfig(torch="1.13.1", monai="0.9.0", simpleitk="2.1.0", hieseg="0.0.1", git_commit="0" * 40,
                       git_dirty=False)


def git_output(folder: Path, *args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def test_current_provenance_names_the_running_versions_and_the_checkout_commit() -> None:
    provenance = current_provenance()
    assert provenance.torch == torch.__version__ and provenance.monai == monai.__version__
    assert provenance.simpleitk == sitk.Version.VersionString() and provenance.hieseg == hieseg.__version__
    head = git_output(REPO, "rev-parse", "HEAD")
    assert provenance.git_commit == (head.strip() if head else None)
    changes = git_output(REPO, "status", "--porcelain", "--untracked-files=no")
    assert provenance.git_dirty == (bool(changes.strip()) if head else None)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_commit_only_for_a_package_at_the_top_of_a_checkout(tmp_path: Path) -> None:
    assert git_state(tmp_path) == (None, None)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=tmp_path / "repo", check=True)
    (tmp_path / "repo" / "hieseg").mkdir()
    assert git_state(tmp_path / "repo" / "hieseg") == (git_output(tmp_path / "repo", "rev-parse", "HEAD").strip(), False)
    nested = tmp_path / "repo" / "venv" / "site-packages" / "hieseg"
    nested.mkdir(parents=True)
    assert git_state(nested) == (None, None)


def test_provenance_round_trips_and_older_files_have_none(tmp_path: Path) -> None:
    config = dataclasses.replace(tiny_config(), provenance=OLD)
    config.save(tmp_path / CONFIG_FILENAME)
    assert ExperimentConfig.load(tmp_path / CONFIG_FILENAME) == config
    older = tiny_config().to_dict()
    assert "provenance" not in older
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert ExperimentConfig.load(tmp_path / "older.json").provenance is None
    shipped = ExperimentConfig.load(REPO / "model" / CONFIG_FILENAME).provenance
    assert shipped is not None and shipped.torch and shipped.monai and shipped.simpleitk
    assert "provenance" not in tiny_config().to_dict()


def write_model(folder: Path, source: Path, provenance: ProvenanceConfig | None) -> Path:
    folder.mkdir()
    shutil.copy(source / "fold0.pt", folder / "fold0.pt")
    config = ExperimentConfig.load(source / CONFIG_FILENAME)
    dataclasses.replace(config, provenance=provenance).save(folder / CONFIG_FILENAME)
    return folder


def test_weights_of_other_torch_and_monai_versions_load_with_a_warning_naming_both(
    untrained_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_model(tmp_path / "old", untrained_model_dir, OLD)
    with caplog.at_level(logging.WARNING, logger="hieseg.model.provenance"):
        bundle = load_bundle(folder, torch.device("cpu"))
    assert len(bundle.networks) == 1
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert f"torch 1.13.1, running torch {torch.__version__}" in warnings[0]
    assert f"MONAI 0.9.0, running MONAI {monai.__version__}" in warnings[1]
    assert all(str(folder / CONFIG_FILENAME) in message for message in warnings)


def test_same_minor_versions_or_no_provenance_load_silently(
    untrained_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    patch_level = dataclasses.replace(current_provenance(), torch=torch.__version__.split("+")[0] + ".99",
                                      simpleitk="1.0.0", git_commit=None, git_dirty=None)
    for name, provenance in (("same", patch_level), ("none", None)):
        with caplog.at_level(logging.WARNING, logger="hieseg.model.provenance"):
            load_bundle(write_model(tmp_path / name, untrained_model_dir, provenance), torch.device("cpu"))
    assert caplog.records == []


def test_a_config_json_given_as_starting_point_drops_its_provenance(tmp_path: Path) -> None:
    dataclasses.replace(tiny_config(), provenance=OLD).save(tmp_path / CONFIG_FILENAME)
    assert build_config(tmp_path / CONFIG_FILENAME, {}, {}).provenance is None


def test_training_records_provenance_and_other_provenance_blocks_neither_a_fold_nor_a_resume(
    small_cases: list, tmp_path: Path
) -> None:
    config = tiny_config(**{"train.epochs": 1, "train.steps_per_epoch": 1, "tuning.enabled": False})
    train(config, small_cases, tmp_path, device=torch.device("cpu"), progress=False)
    path = tmp_path / CONFIG_FILENAME
    assert ExperimentConfig.load(path).provenance == current_provenance()

    data = json.loads(path.read_text())
    data["provenance"] = dataclasses.asdict(OLD)
    path.write_text(json.dumps(data))
    train(config.with_overrides({"train.fold": 1}), small_cases, tmp_path, device=torch.device("cpu"), progress=False)
    assert ExperimentConfig.load(path).provenance == current_provenance()

    path.write_text(json.dumps(data))
    train(config, small_cases, tmp_path, resume=True, device=torch.device("cpu"), progress=False)
    assert ExperimentConfig.load(path).provenance == current_provenance()
