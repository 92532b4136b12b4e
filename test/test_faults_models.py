"""Faults in the files that hold models and runs (issue 30): exit 0 must mean the result on disk is right, and no
file read as weights, checkpoint, refinement or bundle ever runs code.

Each refusal is exit 2 with one ``error:`` line naming the file and the cause, and leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import files_under, tiny_config
from test_faults import refused

from hieseg.cli import export as export_cli
from hieseg.cli import infer as inference_cli
from hieseg.cli import train as train_cli
from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.errors import ConfigError, ModelError, OutputError, TrainingError
from hieseg.model.refinement import REFINEMENT_FILENAME
from hieseg.training import checkpoint as checkpoint_module
from hieseg.training import trainer as trainer_module
from hieseg.training.checkpoint import read_checkpoint, save_atomic, save_weights

DEEP = 100_000
"""Levels of nesting of the hostile JSON files: far beyond Python's recursion limit."""


class Payload:
    """Unpickled, it would create ``marker``: the code a crafted weights or checkpoint file smuggles in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path, protocol: int | None = None) -> None:
    """Write a file at ``path`` whose unpickling would run :class:`Payload`: torch's zip archive, or with a
    ``protocol`` a bare pickle of it."""
    payload = {"weight": Payload(marker)}
    if protocol is None:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=protocol))


def all_finite(path: Path) -> bool:
    """Whether every floating-point tensor of a saved state dict or checkpoint is finite."""
    stack: list[object] = [torch.load(path, map_location="cpu", weights_only=True)]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return False
    return True


@pytest.fixture
def model_copy(untrained_model_dir: Path, tmp_path: Path, container: dict[str, Path],
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the untrained weights folder, which the container's inference uses."""
    folder = Path(shutil.copytree(untrained_model_dir, tmp_path / "model-copy"))
    monkeypatch.setenv("HIESEG_MODEL", str(folder))
    return folder


# ---- row 1: no code runs from a file we load --------------------------------------------------------------------

NAMED = "(its pickle asks for posix.system, which is never run)"


@pytest.mark.parametrize(("protocol", "named"), [(None, NAMED), (2, NAMED), (4, "or truncated or corrupt")],
                         ids=["torch archive", "pickle protocol 2", "pickle protocol 4, which torch warns about"])
def test_a_pickle_payload_in_the_weights_never_runs(model_copy, container, capsys, tmp_path, protocol,
                                                    named) -> None:
    marker = tmp_path / "ran"
    plant(model_copy / "fold0.pt", marker, protocol)
    with warnings.catch_warnings(record=True) as caught:  # outside pytest, a warning is two more lines on stderr
        warnings.simplefilter("always")
        status = inference_cli.main([])
    refused(status, capsys, f"{model_copy / 'fold0.pt'}: unreadable weights file", named)
    assert not [warning for warning in caught if "pickle" in str(warning.message)]
    assert not marker.exists()
    assert files_under(container["output"]) == []


def test_hostile_refinement_json_is_refused(model_copy, container, capsys) -> None:
    (model_copy / REFINEMENT_FILENAME).write_text("[" * DEEP + "]" * DEEP)
    refused(inference_cli.main([]), capsys, f"{model_copy / REFINEMENT_FILENAME}: nested too deeply")
    (model_copy / REFINEMENT_FILENAME).write_text(json.dumps({"features": [{"__reduce__": "os.system"}] * 1000}))
    message = refused(inference_cli.main([]), capsys, f"{model_copy / REFINEMENT_FILENAME}: features [{{")
    assert len(message) < 600 and '..."' not in message and "..." in message
    assert files_under(container["output"]) == []


def test_the_bundle_loads_its_model_without_running_a_payload(untrained_model_dir, tmp_path) -> None:
    from monai.bundle import ConfigParser

    bundle, marker = tmp_path / "bundle", tmp_path / "ran"
    assert export_cli.main(["bundle", "--model", str(untrained_model_dir), "--out", str(bundle)]) == 0
    plant(bundle / "models" / "model.pt", marker)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    with pytest.raises(RuntimeError, match="weights_only=True") as caught:
        parser.get_parsed_content("run#0")  # the bundle's step that loads models/model.pt
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


# ---- training runs: a tiny one, trained once -------------------------------------------------------------------

def train_argv(folder: Path, data: Path, out: Path, **settings: object) -> list[str]:
    """A CPU-sized train.py command line (tiny network, one thread, no tuning), ``settings`` over its defaults."""
    config_path = folder / "base.json"
    tiny_config(**{"train.epochs": 1, "train.steps_per_epoch": 1, "train.torch_threads": 1, "tuning.enabled": False,
                   **settings}).save(config_path)
    return ["--data", str(data), "--out", str(out), "--config", str(config_path), "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def trained(small_release: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A weights folder trained for one epoch (its ``runs/fold0/last.ckpt`` included) and its command line."""
    folder = tmp_path_factory.mktemp("trained")
    argv = train_argv(folder, small_release, folder / "out")
    assert train_cli.main(argv) == 0
    return folder / "out", argv


@pytest.fixture
def run_copy(trained: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A private copy of the trained folder, and the command line that resumes it."""
    source, argv = trained
    out = Path(shutil.copytree(source, tmp_path / "out"))
    return out, [*[str(out) if item == str(source) else item for item in argv], "--resume"]


def test_a_pickle_payload_in_the_checkpoint_never_runs(run_copy, capsys, tmp_path) -> None:
    out, argv = run_copy
    checkpoint, marker = out / "runs" / "fold0" / "last.ckpt", tmp_path / "ran"
    plant(checkpoint, marker)
    before = checkpoint.read_bytes()
    refused(train_cli.main(argv), capsys, f"{checkpoint}: unreadable checkpoint",
            "its pickle asks for posix.system, which is never run")
    assert not marker.exists() and checkpoint.read_bytes() == before


def _edit(field: str, value: object) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint[field] = value
    return edit


def _edit_state(checkpoint: dict) -> None:
    checkpoint["state"]["surprise"] = 1


def _drop_param_groups(checkpoint: dict) -> None:
    del checkpoint["optimizer"]["param_groups"]


def _bad_config(checkpoint: dict) -> None:
    checkpoint["config"]["train"]["epochs"] = 0


def _resized_tensor(checkpoint: dict) -> None:
    name = next(iter(checkpoint["model"]))
    checkpoint["model"][name] = torch.zeros(3)


def _resized_moment(checkpoint: dict) -> None:
    moments = next(iter(checkpoint["optimizer"]["state"].values()))
    moments["exp_avg"] = torch.zeros(7, 7)


def _scheduler_with_optimizer(checkpoint: dict) -> None:
    checkpoint["scheduler"]["optimizer"] = {}


def _boolean_epoch(checkpoint: dict) -> None:
    checkpoint["state"]["epoch"] = True


DAMAGE: dict[str, tuple[Callable[[dict], None], str]] = {
    "model {}": (_edit("model", {}), "model: expected the network's state dict"),
    "unknown field in state": (_edit_state, "state: unknown field(s) surprise"),
    "optimizer without param_groups": (_drop_param_groups, "optimizer.param_groups: expected a non-empty list"),
    "history not a list": (_edit("history", "rows"), "history: expected a list of log rows, got str"),
    "bad config inside": (_bad_config, "config: invalid configuration: train.epochs: must be >= 1, got 0"),
    "unknown top-level field": (_edit("future", 1), "unknown field(s) future (written by a newer version?)"),
    "tensor of another shape": (_resized_tensor, "model: does not fit the network of its configuration"),
    "optimizer moment of another shape": (_resized_moment, "optimizer.state: exp_avg does not fit its parameter"),
    "scheduler holding an optimizer": (_scheduler_with_optimizer, "scheduler: holds an optimizer"),
    "epoch true": (_boolean_epoch, "state.epoch: expected a whole number >= 0, got True"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_or_newer_checkpoint_is_refused_naming_the_field(run_copy, capsys, damage: str) -> None:
    out, argv = run_copy
    checkpoint = out / "runs" / "fold0" / "last.ckpt"
    edit, fragment = DAMAGE[damage]
    data = torch.load(checkpoint, weights_only=True)
    edit(data)
    torch.save(data, checkpoint)
    before = {path: path.read_bytes() for path in files_under(out)}
    refused(train_cli.main(argv), capsys, f"{checkpoint}: damaged or unsupported checkpoint: ", fragment,
            "delete it to train from the start")
    assert {path: path.read_bytes() for path in files_under(out)} == before


def test_an_old_checkpoint_with_numpy_random_states_is_still_read(trained, tmp_path) -> None:
    import numpy as np

    data = torch.load(trained[0] / "runs" / "fold0" / "last.ckpt", weights_only=True)
    data["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": (3, (1, 2), None)}
    torch.save(data, tmp_path / "last.ckpt")
    assert read_checkpoint(tmp_path / "last.ckpt")["state"] == data["state"]


# ---- row 2: non-finite weights and losses ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_weights_with_a_non_finite_tensor_are_refused(model_copy, container, capsys, value: float) -> None:
    state = torch.load(model_copy / "fold0.pt", weights_only=True)
    name = max(state)
    state[name].view(-1)[0] = value
    torch.save(state, model_copy / "fold0.pt")
    refused(inference_cli.main([]), capsys, f"{model_copy / 'fold0.pt'}: tensor {name} holds NaN or infinite values",
            "lower train.learning_rate")
    assert files_under(container["output"]) == []


def test_training_at_a_huge_learning_rate_stops_and_saves_nothing_non_finite(small_release, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = train_argv(tmp_path, small_release, out, **{"train.epochs": 3})
    refused(train_cli.main([*argv, "--set", "train.learning_rate=1e30"]), capsys, "training diverged at epoch",
            "learning rate", "lower train.learning_rate and train again into a new --out")
    assert "best validation Dice" not in capsys.readouterr().out
    saved = [path for path in files_under(out) if path.suffix in (".pt", ".ckpt")]
    assert saved and all(all_finite(path) for path in saved)


def _failing_steps(monkeypatch: pytest.MonkeyPatch, failing_call: int, fault: Callable[[torch.nn.Module], float]
                   ) -> None:
    """Make optimisation step number ``failing_call`` (1-based) end with ``fault(network)`` as its loss."""
    real, calls = trainer_module.optimisation_step, []

    def step(config, network, loss_function, optimization, batch, device) -> float:
        loss = real(config, network, loss_function, optimization, batch, device)
        calls.append(loss)
        return fault(network) if len(calls) == failing_call else loss

    monkeypatch.setattr(trainer_module, "optimisation_step", step)


def _poison(network: torch.nn.Module) -> float:
    with torch.no_grad():
        next(network.parameters()).view(-1)[0] = math.nan
    return 0.5


FAILURES: dict[str, tuple[Callable[[torch.nn.Module], float], str]] = {
    "NaN loss": (lambda network: math.nan, "training diverged at epoch 2, step 2 (training loss nan, learning rate"),
    "NaN weights": (_poison, "training diverged at epoch 2 (tensor "),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_divergence_keeps_the_last_good_checkpoint(small_release, tmp_path, capsys, monkeypatch, failure) -> None:
    fault, fragment = FAILURES[failure]
    out = tmp_path / "out"
    argv = train_argv(tmp_path, small_release, out, **{"train.epochs": 3, "train.steps_per_epoch": 2})
    _failing_steps(monkeypatch, 4, fault)
    checkpoint = out / "runs" / "fold0" / "last.ckpt"
    refused(train_cli.main(argv), capsys, f"{checkpoint}: {fragment}", "this checkpoint of epoch 1")
    kept = torch.load(checkpoint, weights_only=True)
    assert kept["state"]["epoch"] == 1 and len(kept["history"]) == 1
    assert all_finite(checkpoint) and all_finite(out / "fold0.pt")
    assert not [path for path in files_under(out) if path.name.startswith(".tmp-")]


def test_non_finite_weights_are_never_saved(tmp_path) -> None:
    with pytest.raises(TrainingError, match=r"fold0.pt: not saved: tensor bias holds NaN"):
        save_weights({"weight": torch.ones(2), "bias": torch.tensor([math.nan])}, tmp_path / "fold0.pt")
    assert list(tmp_path.iterdir()) == []


# ---- row 4: a full disk -------------------------------------------------------------------------------------------

def test_a_failing_torch_writer_is_an_output_error(small_release, tmp_path, capsys, monkeypatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    out = tmp_path / "out"
    refused(train_cli.main(train_argv(tmp_path, small_release, out)), capsys,
            f"{out / 'fold0.pt'}: cannot be written (PytorchStreamWriter failed writing file data/0: file write "
            "failed; is the disk full?)")
    assert not [path for path in files_under(out) if path.suffix in (".pt", ".ckpt")]


def test_a_full_tmpfs_is_an_output_error(tmp_path) -> None:
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if os.geteuid() != 0 or not Path("/proc/mounts").exists():
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]
    if subprocess.run(mount, check=False, capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        with pytest.raises(OutputError, match=r"fold0.pt: cannot be written \(No space left on device\)"):
            save_atomic({"weight": torch.zeros(100_000)}, disk / "fold0.pt")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ---- row 5: tuning.json copied into a bundle ---------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("dice", math.nan, "chosen.dice: expected a finite number in [0, 1], got NaN"),
    ("masd_mm", -5, "chosen.masd_mm: expected a finite number >= 0, got -5"),
    ("nsd", "high", 'chosen.nsd: expected a finite number in [0, 1], got "high"'),
])
def test_bad_tuning_scores_are_refused_by_the_bundle_export(untrained_model_dir, tmp_path, capsys, field, value,
                                                            fragment) -> None:
    model = Path(shutil.copytree(untrained_model_dir, tmp_path / "model"))
    chosen = {"threshold": 0.5, "dice": 0.5, "masd_mm": 3.0, "nsd": 0.7, field: value}
    (model / "tuning.json").write_text(json.dumps({"chosen": chosen}))
    refused(export_cli.main(["bundle", "--model", str(model), "--out", str(tmp_path / "bundle")]), capsys,
            f"{model / 'tuning.json'}: {fragment}")
    assert not (tmp_path / "bundle").exists()


def test_the_bundle_metadata_is_strict_json_with_the_tuning_scores(untrained_model_dir, tmp_path) -> None:
    model = Path(shutil.copytree(untrained_model_dir, tmp_path / "model"))
    (model / "tuning.json").write_text(json.dumps({"chosen": {"dice": 0.5, "masd_mm": 3.0, "nsd": 0.7}}))
    assert export_cli.main(["bundle", "--model", str(model), "--out", str(tmp_path / "bundle")]) == 0

    def no_constants(name: str) -> None:
        raise AssertionError(f"metadata.json holds {name}, which is not JSON")

    text = (tmp_path / "bundle" / "configs" / "metadata.json").read_text()
    metrics = json.loads(text, parse_constant=no_constants)["eval_metrics"]
    assert metrics == {"validation_mean_dice": 0.5, "validation_mean_masd_mm": 3.0, "validation_mean_nsd": 0.7}


# ---- row 6: config.json nested too deeply, booleans for numbers --------------------------------------------------

def test_a_config_nested_too_deeply_is_refused(model_copy, container, small_release, tmp_path, capsys) -> None:
    (model_copy / CONFIG_FILENAME).write_text('{"train": ' + "[" * DEEP + "]" * DEEP + "}")
    refused(inference_cli.main([]), capsys, f"{model_copy / CONFIG_FILENAME}: cannot read the configuration",
            "nested too deeply")
    config = tiny_config().to_dict()
    config["train"]["patch_size"] = [[[[[[[[[48]]]]]]]]]
    (tmp_path / "deep.json").write_text(json.dumps(config))
    argv = ["--data", str(small_release), "--out", str(tmp_path / "out"), "--config", str(tmp_path / "deep.json")]
    refused(train_cli.main(argv), capsys, f"{tmp_path / 'deep.json'}: invalid configuration: nested too deeply")
    assert files_under(container["output"]) == [] and not (tmp_path / "out").exists()


def test_a_set_value_nested_too_deeply_is_refused(small_release, tmp_path, capsys) -> None:
    argv = ["--data", str(small_release), "--out", str(tmp_path / "out"),
            "--set", "train.patch_size=" + "[" * DEEP + "]" * DEEP]
    refused(train_cli.main(argv), capsys, "--set train.patch_size: the value is nested too deeply")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("version", [True, 1.0, "1", None])
def test_a_format_version_that_is_not_a_whole_number_is_refused(tmp_path, version) -> None:
    path = tmp_path / CONFIG_FILENAME
    path.write_text(json.dumps({**tiny_config().to_dict(), "format_version": version}))
    with pytest.raises(ConfigError, match=rf"{path}: invalid configuration: config format_version "
                                          rf"{json.dumps(version)} is not supported"):
        ExperimentConfig.load(path)


def test_a_weights_folder_whose_format_version_is_true_is_refused(model_copy, container, capsys) -> None:
    config = json.loads((model_copy / CONFIG_FILENAME).read_text())
    (model_copy / CONFIG_FILENAME).write_text(json.dumps({**config, "format_version": True}))
    refused(inference_cli.main([]), capsys, f"{model_copy / CONFIG_FILENAME}: invalid configuration: config "
                                            "format_version true is not supported (expected 1 to 4)")
    assert files_under(container["output"]) == []


def test_a_checkpoint_config_nested_too_deeply_is_refused(trained, tmp_path) -> None:
    data = torch.load(trained[0] / "runs" / "fold0" / "last.ckpt", weights_only=True)
    deep: list = []
    for _ in range(100):  # as deep as torch.save can go, far beyond a configuration's depth
        deep = [deep]
    data["config"]["train"]["epochs"] = deep
    torch.save(data, tmp_path / "last.ckpt")
    with pytest.raises(ModelError, match="last.ckpt: damaged or unsupported checkpoint: config: invalid "
                                         "configuration: nested too deeply"):
        read_checkpoint(tmp_path / "last.ckpt")
