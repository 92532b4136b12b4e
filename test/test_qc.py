"""Tests of the QC montage on tiny synthetic images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from hieseg.qc import FALLBACK_SLICES, PANEL_INCHES, DPI, write_montage

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPE_ZYX = (10, 12, 16)
SPACING = (0.9, 0.9, 3.0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image(array_zyx: np.ndarray) -> sitk.Image:
    result = sitk.GetImageFromArray(array_zyx)
    result.SetSpacing(SPACING)
    return result


def adc() -> sitk.Image:
    """Brain (positive ADC) on slices 2-7 only."""
    values = np.zeros(SHAPE_ZYX, dtype=np.float32)
    values[2:8, 2:10, 3:13] = np.random.default_rng(0).uniform(600, 1800, (6, 8, 10))
    return image(values)


def zadc() -> sitk.Image:
    return image(np.random.default_rng(1).normal(0, 2, SHAPE_ZYX).astype(np.float32))


def mask_on(slices: list[int]) -> sitk.Image:
    values = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    for z in slices:
        values[z, 4:7, 5:9] = 1
    return image(values)


def assert_png(path: Path, rows: int, columns: int) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)  # decodes the whole file, so it is a valid PNG
    assert pixels.shape[:2] == (rows * PANEL_INCHES * DPI, columns * PANEL_INCHES * DPI)


def test_shows_exactly_the_slices_with_lesion(tmp_path: Path) -> None:
    out = tmp_path / "qc.png"
    shown = write_montage(adc(), zadc(), mask_on([3, 6]), mask_on([2, 3]), out)
    assert shown == [2, 3, 6]
    assert_png(out, rows=4, columns=3)


def test_caps_the_number_of_slices_evenly(tmp_path: Path) -> None:
    out = tmp_path / "qc.png"
    shown = write_montage(adc(), zadc(), mask_on(list(range(10))), None, out, max_slices=4)
    assert shown == [0, 3, 6, 9]
    assert_png(out, rows=3, columns=4)


def test_without_lesion_shows_evenly_spaced_brain_slices(tmp_path: Path) -> None:
    empty = mask_on([])
    shown = write_montage(adc(), zadc(), empty, empty, tmp_path / "qc.png")
    assert len(shown) == FALLBACK_SLICES
    assert shown[0] == 2 and shown[-1] == 7 and shown == sorted(set(shown))


def test_rejects_images_of_different_sizes(tmp_path: Path) -> None:
    small = image(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="size"):
        write_montage(adc(), zadc(), small, None, tmp_path / "qc.png")


def test_cli_writes_the_png(tmp_path: Path) -> None:
    paths = {name: tmp_path / f"{name}.mha" for name in ("adc", "zadc", "truth", "pred")}
    for name, picture in (("adc", adc()), ("zadc", zadc()), ("truth", mask_on([4])), ("pred", mask_on([5]))):
        sitk.WriteImage(picture, str(paths[name]))
    out = tmp_path / "montage.png"
    result = subprocess.run(
        [sys.executable, "-m", "hieseg.qc", *(f"--{k}={v}" for k, v in paths.items()), f"--out={out}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "[4, 5]" in result.stdout
    assert_png(out, rows=4, columns=2)
