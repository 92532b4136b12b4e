"""The shipped sample case through inference.py with the shipped weights, as the container runs it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from compare_outputs import compare

from hieseg.evaluation.metrics import dice_score
from hieseg.io.layout import CONTAINER_OUTPUT_DIR

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INPUT = REPO / "test" / "input"
EXPECTED = REPO / "test" / "expected_output"
TRUTH_DIR = REPO / "test" / "sample_truth"
DEMO_MODEL_MIN_DICE = 0.75
"""The demo model scores 0.88 on the sample; far below means something broke."""


def run_container_like(output: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HIESEG_INPUT": str(SAMPLE_INPUT), "HIESEG_OUTPUT": str(output), "HIESEG_DEVICE": "cpu"}
    env.pop("HIESEG_MODEL", None)
    return subprocess.run([sys.executable, str(REPO / "inference.py")], env=env, capture_output=True, text=True)


def test_sample_case_matches_the_expected_output_and_the_truth(tmp_path: Path) -> None:
    result = run_container_like(tmp_path)
    assert result.returncode == 0, result.stderr
    assert compare(tmp_path, EXPECTED) == []
    (mask_path,) = (tmp_path / CONTAINER_OUTPUT_DIR).glob("*.mha")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(TRUTH_DIR / mask_path.name)))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
    assert dice_score(mask, truth) >= DEMO_MODEL_MIN_DICE


def test_comparison_catches_a_different_mask(tmp_path: Path) -> None:
    shutil.copytree(EXPECTED, tmp_path, dirs_exist_ok=True)
    (path,) = (tmp_path / CONTAINER_OUTPUT_DIR).glob("*.mha")
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[:, :8, :8] = 1 - array[:, :8, :8]
    changed = sitk.GetImageFromArray(array.astype(np.uint8))
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))
    problems = compare(tmp_path, EXPECTED)
    assert len(problems) == 1 and "of voxels differ" in problems[0]
