"""The fault suite: what every bad input, setting, output location and interruption gets.

A refusal must exit with status 2, say in one line what is wrong with which file or setting
(plain numbers, no traceback), and leave nothing behind; a fault that can be tolerated must
give the right result and a warning naming the file. docs/reliability.md summarises this file
(and test_reliability.py, test_startup.py). Everything runs in-process on small synthetic cases.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import UUID, files_under, rewrite, tiny_config, unwritable_folder

from hieseg.cli import evaluate as evaluate_cli
from hieseg.cli import infer as inference_cli
from hieseg.cli import train as train_cli
from hieseg.config.settings import CONFIG_FILENAME
from hieseg.io.layout import (
    CONTAINER_ADC_DIR,
    CONTAINER_OUTPUT_DIR,
    CONTAINER_ZADC_DIR,
    adc_path,
    discover_cases,
    label_path,
    load_case,
    zadc_path,
)
from hieseg.synthesis.generator import make_case
from hieseg.training import trainer
from hieseg.training.data import check_labels
from hieseg.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INPUT = REPO / "test" / "input"
DEMO_MODEL = REPO / "model"


def refused(status: int, capsys: pytest.CaptureFixture, *fragments: str) -> str:
    """Assert a refusal: exit 2 and exactly one line on stderr, ``error: ...`` holding every fragment."""
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert "np.float64" not in err and "Traceback" not in err
    return lines[0]


def adc_file(container: dict[str, Path]) -> Path:
    return container["input"] / CONTAINER_ADC_DIR / f"{UUID}.mha"


def zadc_file(container: dict[str, Path]) -> Path:
    return container["input"] / CONTAINER_ZADC_DIR / f"{UUID}.mha"


def mask_file(output: Path) -> Path:
    return output / CONTAINER_OUTPUT_DIR / f"{UUID}.mha"


def voxels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if inference or training starts reading cases or weights: the refusal must come first."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the work started before the refusal")

    monkeypatch.setattr(inference_cli, "read_input_case", started)
    monkeypatch.setattr(inference_cli, "load_bundle", started)
    monkeypatch.setattr(train_cli, "load_cases", started)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# ---- inference: bad input files -------------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan_voxels(path: Path) -> None:
    array = voxels(path)
    array[3, 10, 10], array[4, 11, 11] = np.nan, np.inf
    rewrite(path, array)


INPUT_FAULTS: dict[str, tuple[Callable[[dict[str, Path]], None], tuple[str, ...]]] = {
    "missing Z_ADC": (lambda c: zadc_file(c).unlink(),
                      ("z-score-adc", "expected exactly one .mha file, found nothing")),
    "extra input file": (lambda c: (adc_file(c).parent / "second.mha").write_bytes(b""),
                         ("skull-stripped-adc-brain-mri", "found", "second.mha")),
    "no input folder": (lambda c: shutil.rmtree(c["input"] / "images"), ("input folder not found",)),
    "geometry mismatch": (lambda c: rewrite(zadc_file(c), Spacing=(1.11019, 1.11019, 3.0)),
                          ("geometry disagrees", "spacing (", "vs (1.1102, 1.1102, 3)")),
    "NaN or inf voxels": (lambda c: _nan_voxels(adc_file(c)), (f"{UUID}.mha", "2 NaN or infinite voxel(s)")),
    "2D image": (lambda c: sitk.WriteImage(sitk.Image(32, 32, sitk.sitkFloat32), str(adc_file(c))),
                 ("expected a 3D image, got 2D",)),
    "not an image": (lambda c: zadc_file(c).write_bytes(b"not an image at all"),
                     ("cannot be read as an image (no readable image header in its 19 bytes",)),
    "truncated image": (lambda c: _truncate(zadc_file(c)),
                        ("cannot be read as an image (truncated: the header announces", "bytes of voxel data")),
    "empty file": (lambda c: adc_file(c).write_bytes(b""), ("the file is empty, 0 bytes",)),
    "ADC without brain": (lambda c: rewrite(adc_file(c), np.zeros_like(voxels(adc_file(c)))), ("no brain voxels",)),
    "ADC background -1, no brain": (lambda c: rewrite(adc_file(c), np.full_like(voxels(adc_file(c)), -1.0)),
                                    ("no brain voxels (the skull-stripped ADC has no value above 0)",)),
}


@pytest.mark.parametrize("fault", INPUT_FAULTS)
def test_bad_input_file_is_refused(container, capsys, fault: str) -> None:
    breaker, fragments = INPUT_FAULTS[fault]
    breaker(container)
    message = refused(inference_cli.main([]), capsys, *fragments)
    assert "No such file or directory" not in message
    assert files_under(container["output"]) == []


# ---- inference: bad weights folder or settings ----------------------------------------------

def _model_with(tmp_path: Path, source: Path, edit: Callable[[dict], None] | None = None,
                weights: bytes | None = None) -> Path:
    folder = tmp_path / "model-copy"
    shutil.copytree(source, folder)
    if edit is not None:
        data = json.loads((folder / CONFIG_FILENAME).read_text())
        edit(data)
        (folder / CONFIG_FILENAME).write_text(json.dumps(data))
    if weights is not None:
        (folder / "fold0.pt").write_bytes(weights)
    return folder


def test_missing_config_is_refused(container, capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "empty-model").mkdir()
    monkeypatch.setenv("HIESEG_MODEL", str(tmp_path / "empty-model"))
    refused(inference_cli.main([]), capsys, "config.json: missing")
    assert files_under(container["output"]) == []


def test_folder_without_weights_is_refused(container, capsys, tmp_path: Path, monkeypatch) -> None:
    folder = _model_with(tmp_path, container["model"])
    (folder / "fold0.pt").unlink()
    monkeypatch.setenv("HIESEG_MODEL", str(folder))
    refused(inference_cli.main([]), capsys, "no weight files (*.pt) found")
    assert files_under(container["output"]) == []


def test_corrupt_weights_are_refused_without_pytorch_advice(container, capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HIESEG_MODEL", str(_model_with(tmp_path, container["model"], weights=b"not torch")))
    message = refused(inference_cli.main([]), capsys, "fold0.pt: unreadable weights file (9 bytes)")
    assert "weights_only" not in message
    assert files_under(container["output"]) == []


def test_weights_of_another_network_are_refused(container, capsys, tmp_path: Path, monkeypatch) -> None:
    folder = _model_with(tmp_path, container["model"], edit=lambda d: d["unet"].update(channels=[8, 16, 64]))
    monkeypatch.setenv("HIESEG_MODEL", str(folder))
    refused(inference_cli.main([]), capsys, "fold0.pt: incompatible with the network of config.json",
            "in the file and")
    assert files_under(container["output"]) == []


CONFIG_FAULTS: dict[str, tuple[Callable[[dict], None], str]] = {
    "wrong type": (lambda d: d["inference"].update(threshold="high"),
                   'inference.threshold: expected a number, got "high"'),
    "out of range": (lambda d: d["inference"].update(threshold=1.5), "inference.threshold: must be in (0, 1), got 1.5"),
    "unknown key": (lambda d: d["inference"].update(treshold=0.5), "unknown key(s) in section 'inference': treshold"),
    "no grid": (lambda d: d["preprocess"].update(target_spacing=None), "preprocess.target_spacing is unset"),
}


@pytest.mark.parametrize("fault", CONFIG_FAULTS)
def test_bad_config_json_is_refused(container, capsys, tmp_path: Path, monkeypatch, fault: str) -> None:
    edit, fragment = CONFIG_FAULTS[fault]
    monkeypatch.setenv("HIESEG_MODEL", str(_model_with(tmp_path, container["model"], edit=edit)))
    refused(inference_cli.main([]), capsys, fragment)
    assert files_under(container["output"]) == []


def test_config_that_is_not_json_is_refused(container, capsys, tmp_path: Path, monkeypatch) -> None:
    folder = _model_with(tmp_path, container["model"])
    (folder / CONFIG_FILENAME).write_text("{not json")
    monkeypatch.setenv("HIESEG_MODEL", str(folder))
    refused(inference_cli.main([]), capsys, "config.json: cannot read the configuration, not valid JSON")


FLAG_FAULTS: dict[str, tuple[list[str], str]] = {
    "threshold nan": (["--threshold", "nan"], "inference.threshold: expected a finite number, got NaN"),
    "threshold -1": (["--threshold", "-1"], "inference.threshold: must be in (0, 1), got -1.0"),
    "threshold 1.5": (["--threshold", "1.5"], "inference.threshold: must be in (0, 1), got 1.5"),
    "negative min component": (["--min-component-mm3", "-5"], "inference.min_component_mm3: must be >= 0"),
    "device bogus": (["--device", "bogus"], "--device bogus: not a supported device; use auto, cpu, cuda or cuda:N"),
    "device mps": (["--device", "mps"], "--device mps: not a supported device"),
}


@pytest.mark.parametrize("fault", FLAG_FAULTS)
def test_bad_flag_is_refused_before_any_work(container, capsys, no_work, fault: str) -> None:
    argv, fragment = FLAG_FAULTS[fault]
    refused(inference_cli.main(argv), capsys, fragment)
    assert files_under(container["output"]) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_refused(container, capsys, no_work) -> None:
    refused(inference_cli.main(["--device", "cuda"]), capsys, "--device cuda: CUDA is not available on this machine")


# ---- inference: output location ---------------------------------------------------------------

def test_unwritable_output_is_refused_before_any_work(container, capsys, no_work, tmp_path: Path) -> None:
    output = unwritable_folder(tmp_path)
    refused(inference_cli.main(["--output", str(output)]), capsys, str(output), "cannot write in")
    assert not output.exists()


def test_output_root_that_is_a_file_is_refused_before_any_work(container, capsys, no_work, tmp_path: Path) -> None:
    output = tmp_path / "output-file"
    output.write_text("keep me")
    refused(inference_cli.main(["--output", str(output)]), capsys, f"{output}: is not a folder")
    assert output.read_text() == "keep me"


def test_folder_where_the_mask_goes_is_refused_before_any_work(container, capsys, no_work) -> None:
    mask_file(container["output"]).mkdir(parents=True)
    refused(inference_cli.main([]), capsys, f"{UUID}.mha: is a folder")
    assert files_under(container["output"]) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_the_mask_is_written_with_the_umask_mode(container, mask: int, mode: int) -> None:
    with umask(mask):
        assert inference_cli.main([]) == 0
    assert mask_file(container["output"]).stat().st_mode & 0o777 == mode


# ---- inference: interrupted while writing ------------------------------------------------------

@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_write_leaves_no_temporary_file(container, capsys, monkeypatch, signum, status) -> None:
    real_write = sitk.WriteImage

    def write_then_signal(image: sitk.Image, path: str, *args: object) -> None:
        real_write(image, path, *args)
        assert Path(path).name.startswith(".tmp-")
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(sitk, "WriteImage", write_then_signal)
    # Ctrl-C as a fresh Python process takes it, whatever this test process inherited (a shell
    # starts background jobs with SIGINT ignored).
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    handler_before = signal.getsignal(signal.SIGTERM)
    try:
        status_seen = inference_cli.main([])
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
    assert status_seen == status
    assert capsys.readouterr().err.strip() == (
        f"error: stopped by {signal.Signals(signum).name}; unfinished files were removed")
    assert files_under(container["output"]) == []
    assert signal.getsignal(signal.SIGTERM) == handler_before


# ---- inference: the brain is ADC > 0, whatever the background ----------------------------------

@pytest.fixture
def sample(tmp_path: Path) -> dict[str, Path]:
    """A writable copy of the shipped sample case, with the shipped weights."""
    shutil.copytree(SAMPLE_INPUT, tmp_path / "input")
    return {"input": tmp_path / "input", "output": tmp_path / "output",
            "adc": next((tmp_path / "input" / CONTAINER_ADC_DIR).glob("*.mha")),
            "zadc": next((tmp_path / "input" / CONTAINER_ZADC_DIR).glob("*.mha"))}


def predict_sample(sample: dict[str, Path], output: Path) -> np.ndarray:
    argv = ["--input", str(sample["input"]), "--output", str(output), "--model", str(DEMO_MODEL), "--device", "cpu"]
    assert inference_cli.main(argv) == 0
    return voxels(output / CONTAINER_OUTPUT_DIR / sample["adc"].name)


def test_another_adc_background_gives_the_same_mask_and_a_warning(sample, tmp_path: Path, caplog) -> None:
    reference = predict_sample(sample, tmp_path / "zero")
    adc = voxels(sample["adc"])
    rewrite(sample["adc"], np.where(adc > 0, adc, -1000.0).astype(adc.dtype))
    shifted = predict_sample(sample, tmp_path / "minus1000")
    assert reference.sum() > 100, "the demo model must find the sample's lesions for this test to mean anything"
    assert np.array_equal(shifted, reference)
    assert f"{sample['adc']}: {int((adc <= 0).sum())} voxel(s) below 0 (lowest -1000)" in caplog.text


def test_the_mask_stays_inside_the_adc_brain_and_a_stray_zadc_is_reported(sample, tmp_path: Path, caplog) -> None:
    adc = voxels(sample["adc"])
    one_voxel = np.zeros_like(adc)
    centre = tuple(int(np.median(axis)) for axis in np.nonzero(adc > 0))
    one_voxel[centre] = adc[centre]
    rewrite(sample["adc"], one_voxel)
    mask = predict_sample(sample, tmp_path / "out")
    assert mask[one_voxel <= 0].sum() == 0
    assert str(sample["zadc"]) in caplog.text and "outside the brain of" in caplog.text


# ---- training ------------------------------------------------------------------------------------

def train_args(tmp_path: Path, data: Path, out: Path) -> list[str]:
    """A CPU-sized train.py command line: tiny network, 2 epochs of one step, one thread, no tuning."""
    config_path = tmp_path / "base.json"
    tiny_config(**{"train.epochs": 2, "train.steps_per_epoch": 1, "train.torch_threads": 1,
                   "tuning.enabled": False}).save(config_path)
    return ["--data", str(data), "--out", str(out), "--config", str(config_path), "--device", "cpu", "--no-progress"]


@pytest.fixture
def release(small_release: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the small release."""
    return Path(shutil.copytree(small_release, tmp_path / "release"))


def test_unwritable_training_output_is_refused_before_any_work(small_release, tmp_path, capsys, no_work) -> None:
    out = unwritable_folder(tmp_path)
    refused(train_cli.main(train_args(tmp_path, small_release, out)), capsys, str(out), "cannot write in")
    assert not out.exists()


def test_training_output_that_is_a_file_is_refused(small_release, tmp_path, capsys, no_work) -> None:
    out = tmp_path / "out"
    out.write_text("keep me")
    refused(train_cli.main(train_args(tmp_path, small_release, out)), capsys, f"{out}: is a file, not a folder")
    assert out.read_text() == "keep me"


TRAIN_FLAG_FAULTS: dict[str, tuple[list[str], str]] = {
    "device bogus": (["--device", "bogus"], "--device bogus: not a supported device"),
    "wrong type": (["--set", "train.epochs=ten"], 'train.epochs: expected a whole number, got "ten"'),
    "out of range": (["--set", "train.epochs=0"], "train.epochs: must be >= 1, got 0"),
    "threshold nan": (["--set", "inference.threshold=NaN"], "inference.threshold: expected a finite number, got NaN"),
    "fold past the folds": (["--fold", "4"], "train.fold: must be in [0, 3] for 4 folds, got 4"),
    "unknown key": (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
    "folds and a case list": (["--all-folds", "--val-cases", "SYNTH_001-VISIT_01"],
                              "--all-folds and --val-cases exclude each other"),
}


@pytest.mark.parametrize("fault", TRAIN_FLAG_FAULTS)
def test_bad_training_setting_is_refused_before_any_work(small_release, tmp_path, capsys, no_work, fault) -> None:
    argv, fragment = TRAIN_FLAG_FAULTS[fault]
    refused(train_cli.main([*train_args(tmp_path, small_release, tmp_path / "out"), *argv]), capsys, fragment)
    assert not (tmp_path / "out").exists()


def test_a_config_file_with_a_wrong_type_is_refused(small_release, tmp_path, capsys, no_work) -> None:
    argv = train_args(tmp_path, small_release, tmp_path / "out")
    config_path = tmp_path / "base.json"
    data = json.loads(config_path.read_text())
    data["inference"]["threshold"] = "high"
    config_path.write_text(json.dumps(data))
    refused(train_cli.main(argv), capsys, f"{config_path}: invalid configuration: inference.threshold: expected a "
                                          'number, got "high"')


def test_a_case_with_a_missing_partner_is_refused(release: Path, tmp_path: Path, capsys) -> None:
    zadc_path(release, "SYNTH_004-VISIT_01").unlink()
    refused(train_cli.main(train_args(tmp_path, release, tmp_path / "out")), capsys,
            "case SYNTH_004-VISIT_01: missing partner file")
    assert not (tmp_path / "out").exists()


def test_a_case_id_in_two_training_folders_is_refused(release: Path, tmp_path: Path, capsys) -> None:
    again = Path(shutil.copytree(release, tmp_path / "again"))
    argv = [*train_args(tmp_path, release, tmp_path / "out"), "--data", str(again)]
    refused(train_cli.main(argv), capsys, f"case {discover_cases(release)[0].case_id} is in both {release} and {again}")
    assert not (tmp_path / "out").exists()


def test_a_training_case_without_brain_is_refused(release: Path, tmp_path: Path, capsys) -> None:
    case_id = discover_cases(release)[2].case_id
    adc = adc_path(release, case_id)
    rewrite(adc, np.full_like(voxels(adc), -1.0))
    refused(train_cli.main(train_args(tmp_path, release, tmp_path / "out")), capsys,
            f"case {case_id}: {adc}: no brain voxels")
    assert not (tmp_path / "out").exists()


def test_all_empty_labels_are_refused(release: Path, tmp_path: Path, capsys) -> None:
    for path in (release / "3LABEL").glob("*.mha"):
        rewrite(path, np.zeros_like(voxels(path)))
    refused(train_cli.main(train_args(tmp_path, release, tmp_path / "out")), capsys,
            "the labels of all 6 training case(s) are empty (no lesion voxel)")
    assert not (tmp_path / "out").exists()


def test_empty_validation_labels_are_reported(small_release: Path, caplog) -> None:
    cases = [load_case(files) for files in discover_cases(small_release)[:3]]
    empty = [dataclasses.replace(case, label=sitk.Image(case.label.GetSize(), sitk.sitkUInt8)) for case in cases[1:]]
    check_labels(cases[:1], empty)
    assert "the labels of all 2 validation case(s) are empty" in caplog.text


def test_an_existing_run_is_not_overwritten_without_resume(small_release, tmp_path, capsys, no_work) -> None:
    checkpoint = tmp_path / "out" / "runs" / "fold0" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"earlier run")
    refused(train_cli.main(train_args(tmp_path, small_release, tmp_path / "out")), capsys,
            "last.ckpt exists: pass --resume to continue it")
    assert files_under(tmp_path / "out") == [checkpoint] and checkpoint.read_bytes() == b"earlier run"


def test_a_folder_of_other_settings_is_refused_naming_them_before_any_case_is_read(
    small_release: Path, tmp_path: Path, capsys, no_work
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tiny_config(**{"loss.name": "dice", "train.epochs": 7, "train.steps_per_epoch": 1, "train.torch_threads": 1,
                   "tuning.enabled": False}).save(out / CONFIG_FILENAME)  # train_args' settings but two
    before = (out / CONFIG_FILENAME).read_text()
    refused(train_cli.main(train_args(tmp_path, small_release, out)), capsys,
            "holds a different configuration (loss.name: 'dice' there, 'tversky_hausdorffdt' here; "
            "train.epochs: 7 there, 2 here):")
    assert files_under(out) == [out / CONFIG_FILENAME] and (out / CONFIG_FILENAME).read_text() == before


def test_a_corrupt_checkpoint_is_refused_on_resume(small_release: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = train_args(tmp_path, small_release, out)
    checkpoint = out / "runs" / "fold0" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"truncated")
    refused(train_cli.main([*argv, "--resume"]), capsys, "last.ckpt: unreadable checkpoint (9 bytes")
    assert checkpoint.read_bytes() == b"truncated"


def test_logs_without_a_checkpoint_are_refused_not_overwritten(small_release: Path, tmp_path: Path, capsys,
                                                                no_work) -> None:
    run = tmp_path / "out" / "runs" / "fold0"
    run.mkdir(parents=True)
    logs = "epoch,train_loss,val_dice,learning_rate,seconds\n1,0.5,0.1,0.001,1.0\n"
    (run / "metrics.csv").write_text(logs)
    for argv in ([], ["--resume"]):
        refused(train_cli.main([*train_args(tmp_path, small_release, tmp_path / "out"), *argv]), capsys,
                f"{run / 'metrics.csv'}: logs of a run that has no checkpoint (last.ckpt)")
    assert (run / "metrics.csv").read_text() == logs


def test_a_run_stopped_between_its_checkpoint_and_its_logs_resumes_with_every_row(
    small_release: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    argv = train_args(tmp_path, small_release, out)
    real_write = trainer.write_metrics

    def stopped_before_the_second_epochs_logs(path: Path, history: list) -> None:
        if len(history) == 2:
            raise KeyboardInterrupt
        real_write(path, history)

    monkeypatch.setattr(trainer, "write_metrics", stopped_before_the_second_epochs_logs)
    assert train_cli.main(argv) == 130
    run = out / "runs" / "fold0"
    checkpoint = torch.load(run / "last.ckpt", weights_only=True)
    assert checkpoint["state"]["epoch"] == 2 and metric_epochs(run) == [1]
    monkeypatch.setattr(trainer, "write_metrics", real_write)
    assert train_cli.main([*argv, "--resume"]) == 0
    assert metric_epochs(run) == [1, 2]
    with (run / "metrics.csv").open() as handle:
        assert [float(row["train_loss"]) for row in csv.DictReader(handle)] == [
            row["train_loss"] for row in checkpoint["history"]]


def metric_epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_sigterm_while_training_leaves_a_checkpoint_that_resumes(small_release, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    argv = train_args(tmp_path, small_release, out)
    real_step = Trainer.train_step
    steps = {"n": 0}

    def step_then_killed(*args: object, **kwargs: object) -> float:
        steps["n"] += 1
        if steps["n"] == 2:  # the second epoch's only step
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", step_then_killed)
    with umask(0o022):
        assert train_cli.main(argv) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    run = out / "runs" / "fold0"
    assert torch.load(run / "last.ckpt", weights_only=True)["state"]["epoch"] == 1
    assert metric_epochs(run) == [1]
    assert not [p for p in files_under(out) if p.name.startswith(".tmp-")]
    for written in (run / "last.ckpt", out / "fold0.pt", out / CONFIG_FILENAME, run / "metrics.csv"):
        assert written.stat().st_mode & 0o777 == 0o644, written

    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert train_cli.main([*argv, "--resume"]) == 0
    assert metric_epochs(run) == [1, 2]
    assert torch.load(run / "last.ckpt", weights_only=True)["state"]["epoch"] == 2


# ---- evaluation -----------------------------------------------------------------------------------

def test_predictions_without_truth_are_listed_in_a_warning(tmp_path: Path, caplog) -> None:
    case = make_case("CASE", seed=5, size=(48, 48, 12))
    for folder, names in ((tmp_path / "truth", ["case01.mha"]), (tmp_path / "pred", ["case01.mha", "ghost.mha"])):
        folder.mkdir()
        for name in names:
            sitk.WriteImage(case.label, str(folder / name))
    assert evaluate_cli.main(["--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                          "--out", str(tmp_path / "report")]) == 0
    assert f"1 prediction(s) in {tmp_path / 'pred'} have no truth and are not scored: ghost.mha" in caplog.text
    with (tmp_path / "report" / "per_case.csv").open() as handle:
        assert [row["case_id"] for row in csv.DictReader(handle)] == ["case01"]


def test_a_training_label_outside_the_brain_is_reported(release: Path, caplog) -> None:
    files = discover_cases(release)[0]
    label = voxels(label_path(release, files.case_id))
    label[0, 0, 0] = 1
    rewrite(label_path(release, files.case_id), label)
    load_case(files)
    assert f"{label_path(release, files.case_id)}: 1 lesion voxel(s) outside the brain" in caplog.text
