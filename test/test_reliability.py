"""Reliability, round 2: absurd spacings, messages that say what is wrong, errors that keep their cause,
and promises that had no test (concurrent runs, float64 inputs)."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import files_under, rewrite
from test_faults import adc_file, mask_file, refused, voxels, zadc_file

from hieseg.cli import evaluate as evaluate_cli
from hieseg.cli import infer as inference_cli
from hieseg.errors import ModelError
from hieseg.io.images import read_image
from hieseg.model import weights
from hieseg.training.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("spacing", "fragment"), [
    ((100.0, 100.0, 200.0), "voxel size (100, 100, 200) mm is outside the 0.1-20 mm of an MRI acquisition"),
    ((0.001, 0.001, 0.002), "voxel size (0.001, 0.001, 0.002) mm is outside the 0.1-20 mm"),
])
def test_an_implausible_spacing_is_refused_before_any_resampling(container, capsys, spacing, fragment) -> None:
    for path in (adc_file(container), zadc_file(container)):
        rewrite(path, Spacing=spacing)
    refused(inference_cli.main([]), capsys, str(adc_file(container)), fragment)
    assert files_under(container["output"]) == []


def test_a_plausible_spacing_whose_network_grid_is_absurd_is_refused(container, capsys) -> None:
    big = np.zeros((48, 160, 160), dtype=np.float32)
    big[10:38, 40:120, 40:120] = 1500.0
    for path, array in ((adc_file(container), big), (zadc_file(container), np.zeros_like(big))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((19.0, 19.0, 19.0))
        sitk.WriteImage(image, str(path))
    refused(inference_cli.main([]), capsys, "160 x 160 x 48 voxels of 19 x 19 x 19 mm would need a grid of",
            "over the 134,217,728 accepted; check the spacing in the image header")
    assert files_under(container["output"]) == []


def test_an_absurd_ceiling_spacing_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    refused(evaluate_cli.main(["--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                               "--ceiling-spacing", "0.001", "1", "1"]), capsys,
            "--ceiling-spacing 0.001 1 1: each axis must be within 0.1-20 mm")


def test_a_hidden_looking_input_file_is_named_in_the_refusal(container, capsys) -> None:
    adc = adc_file(container)
    adc.rename(adc.parent / "...mha")
    refused(inference_cli.main([]), capsys, "expected exactly one .mha file, found nothing",
            "(hidden, so ignored: ...mha)")


def test_a_symbolic_link_loop_and_a_broken_link_say_so(tmp_path: Path) -> None:
    (tmp_path / "a.mha").symlink_to(tmp_path / "b.mha")
    (tmp_path / "b.mha").symlink_to(tmp_path / "a.mha")
    (tmp_path / "broken.mha").symlink_to(tmp_path / "gone.mha")
    with pytest.raises(Exception, match=r"a\.mha: a symbolic link that loops back on itself"):
        read_image(tmp_path / "a.mha")
    with pytest.raises(Exception, match=r"broken\.mha: a symbolic link to .*gone\.mha, which does not exist"):
        read_image(tmp_path / "broken.mha")


def test_an_input_root_that_is_a_file_is_called_a_file(container, capsys, tmp_path: Path) -> None:
    a_file = tmp_path / "input.mha"
    a_file.write_bytes(b"")
    refused(inference_cli.main(["--input", str(a_file)]), capsys, f"{a_file}: is a file, not the input folder")


def test_on_the_cpu_auto_says_once_at_info_that_there_is_no_cuda(container, caplog) -> None:
    with caplog.at_level(logging.INFO):
        assert inference_cli.main(["--device", "auto"]) == 0
    notes = [record for record in caplog.records if "CUDA" in record.getMessage()]
    if torch.cuda.is_available():
        assert notes == []
    else:
        assert [(record.levelno, record.getMessage()) for record in notes] == [
            (logging.INFO, "no CUDA device: running on the CPU (slower)")]


def test_a_refusal_is_the_only_thing_printed(container, capsys) -> None:
    zadc_file(container).unlink()
    status = subprocess.run([sys.executable, "inference.py", "--device", "auto"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 2 and status.stderr.count("\n") == 1 and status.stderr.startswith("error: ")


def test_unreadable_weights_and_checkpoints_keep_the_cause(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage, not weights")
    with pytest.raises(ModelError, match="unreadable checkpoint") as caught:
        read_checkpoint(bad)
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)


def test_a_bug_while_loading_weights_is_not_called_a_damaged_file(untrained_model_dir: Path, monkeypatch) -> None:
    def broken_load(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug, not a damaged file")

    monkeypatch.setattr(weights.torch, "load", broken_load)
    with pytest.raises(TypeError, match="a bug"):
        weights.load_bundle(untrained_model_dir, torch.device("cpu"))


def test_two_runs_writing_the_same_output_folder_at_once_both_leave_a_whole_mask(container) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "inference.py"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    written = files_under(container["output"])
    assert written == [mask_file(container["output"])]  # no temporary file left by either run
    mask = sitk.ReadImage(str(written[0]))
    assert mask.GetSize() == sitk.ReadImage(str(adc_file(container))).GetSize()


def test_inputs_stored_as_float64_give_the_mask_of_float32(container, tmp_path: Path) -> None:
    assert inference_cli.main([]) == 0
    float32_mask = voxels(mask_file(container["output"]))
    for path in (adc_file(container), zadc_file(container)):
        image = sitk.ReadImage(str(path))
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat64), str(path))
    output = tmp_path / "float64"
    output.mkdir()
    assert inference_cli.main(["--output", str(output)]) == 0
    assert np.array_equal(voxels(mask_file(output)), float32_mask)
    assert sitk.ReadImage(str(mask_file(output))).GetPixelID() == sitk.sitkUInt8

