"""Tests of the QC picture on tiny hand-made images: size, slice choice, colours exactly where the errors are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from hieseg.errors import ConfigError
from hieseg.reports.qc import (
    CLASS_COLOURS,
    DPI,
    FALLBACK_SLICES,
    FN,
    FP,
    HEADER_INCHES,
    LABEL_INCHES,
    PANEL_INCHES,
    SIDE_INCHES,
    THUMBNAIL_PANEL_INCHES,
    TITLE_INCHES,
    TP,
    QcSettings,
    rgb_bytes,
    select_slices,
    write_qc,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPE_ZYX = (10, 12, 16)
SPACING = (0.9, 0.9, 3.0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROWS = 3
PANEL_PX = round(PANEL_INCHES * DPI)


def image(array_zyx: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> sitk.Image:
    result = sitk.GetImageFromArray(array_zyx)
    result.SetSpacing(spacing)
    return result


def adc() -> sitk.Image:
    """Brain (positive ADC) on slices 2-7 only."""
    values = np.zeros(SHAPE_ZYX, dtype=np.float32)
    values[2:8, 2:10, 3:13] = np.random.default_rng(0).uniform(600, 1800, (6, 8, 10))
    return image(values)


def zadc() -> sitk.Image:
    return image(np.random.default_rng(1).normal(0, 2, SHAPE_ZYX).astype(np.float32))


def mask_on(slices: list[int], rows: slice = slice(4, 7)) -> sitk.Image:
    values = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    for z in slices:
        values[z, rows, 5:9] = 1
    return image(values)


def expected_size(columns_per_view: list[int]) -> tuple[int, int]:
    """(height, width) in pixels, from the layout's bands and square panels."""
    width = LABEL_INCHES + PANEL_INCHES * max(columns_per_view) + SIDE_INCHES
    height = TITLE_INCHES + len(columns_per_view) * (HEADER_INCHES + ROWS * PANEL_INCHES)
    return round(height * DPI), round(width * DPI)


def read_png(path: Path) -> np.ndarray:
    """The picture as uint8 RGB; decoding the whole file also proves it is a valid PNG."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return np.round(imread(path)[..., :3] * 255).astype(np.uint8)


def test_png_has_the_expected_size_for_each_view(tmp_path: Path) -> None:
    out = tmp_path / "qc.png"
    result = write_qc(adc(), zadc(), mask_on([3, 6]), mask_on([2, 3]), out,
                      settings=QcSettings(views=("axial", "coronal", "sagittal")))
    assert result.slices["axial"] == [2, 3, 6]
    assert result.slices["coronal"] == [4, 5, 6]  # y rows 4-6 hold both masks
    assert result.slices["sagittal"] == [5, 6, 7, 8]
    assert read_png(out).shape[:2] == expected_size([3, 3, 4])


def test_title_scores_come_from_the_metrics(tmp_path: Path) -> None:
    result = write_qc(adc(), zadc(), mask_on([3]), mask_on([3, 4]), tmp_path / "qc.png", case_id="c1")
    assert result.metrics is not None and result.metrics.case_id == "c1"
    assert result.metrics.dice == pytest.approx(2 * 12 / (12 + 24))
    assert result.metrics.truth_ml == pytest.approx(24 * 0.9 * 0.9 * 3.0 / 1000)


def test_every_slice_with_lesion_up_to_the_limit_then_the_most_error() -> None:
    lesion = np.zeros((6, 4, 4), dtype=bool)
    error = np.zeros_like(lesion)
    lesion[[0, 1, 2, 4, 5], 1:3, 1:3] = True
    brain = np.ones_like(lesion)
    assert select_slices(lesion, error, brain, axis=0, max_slices=5) == [0, 1, 2, 4, 5]
    error[4, 1, 1] = True
    error[1, 1:3, 1:3] = True
    assert select_slices(lesion, error, brain, axis=0, max_slices=2) == [1, 4]
    # With no error anywhere, the slices with more lesion win, then the lower index.
    lesion[5, 0, :] = True
    assert select_slices(lesion, np.zeros_like(lesion), brain, axis=0, max_slices=2) == [0, 5]


def test_without_lesion_shows_evenly_spaced_brain_slices(tmp_path: Path) -> None:
    empty = mask_on([])
    result = write_qc(adc(), zadc(), empty, empty, tmp_path / "qc.png")
    shown = result.slices["axial"]
    assert len(shown) == FALLBACK_SLICES
    assert shown[0] == 2 and shown[-1] == 7 and shown == sorted(set(shown))


def test_the_three_colours_are_exactly_where_the_errors_are(tmp_path: Path) -> None:
    """A 10 x 10 slice whose brain fills the crop: each voxel is a 15 x 15 pixel block of the error panel."""
    size = 10
    adc_values = np.full((3, size, size), 1000.0, dtype=np.float32)
    truth = np.zeros((3, size, size), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[1, 2, 2:4] = 1  # (2, 2) missed, (2, 3) found
    pred[1, 2, 3] = 1
    pred[1, 6:8, 7] = 1  # two false positives
    expected = {TP: {(2, 3)}, FN: {(2, 2)}, FP: {(6, 7), (7, 7)}}
    spacing = (1.0, 1.0, 1.0)
    out = tmp_path / "qc.png"
    result = write_qc(image(adc_values, spacing), image(np.zeros_like(adc_values), spacing),
                      image(pred, spacing), image(truth, spacing), out)
    assert result.slices == {"axial": [1]}
    pixels = read_png(out)
    voxel_px = PANEL_PX / size
    top = round((TITLE_INCHES + HEADER_INCHES + 2 * PANEL_INCHES) * DPI)  # the error row
    left = round(LABEL_INCHES * DPI)
    panel = pixels[top:top + PANEL_PX, left:left + PANEL_PX]
    for label, voxels in expected.items():
        colour = np.array(rgb_bytes(CLASS_COLOURS[label]), dtype=np.uint8)
        painted = np.all(panel == colour, axis=-1)
        allowed = np.zeros_like(painted)
        for y, x in voxels:
            centre = panel[round((y + 0.5) * voxel_px), round((x + 0.5) * voxel_px)]
            assert tuple(centre) == tuple(colour), (label, y, x)
            core = painted[round(y * voxel_px) + 1:round((y + 1) * voxel_px) - 1,
                           round(x * voxel_px) + 1:round((x + 1) * voxel_px) - 1]
            assert core.all(), (label, y, x)  # the whole voxel is painted, not a speck
            allowed[max(round(y * voxel_px) - 1, 0):round((y + 1) * voxel_px) + 1,
                    max(round(x * voxel_px) - 1, 0):round((x + 1) * voxel_px) + 1] = True
        assert not (painted & ~allowed).any(), f"colour of class {label} outside its voxels"
        # The legend, right of the panels, shows each colour too.
        assert np.all(pixels[top:top + PANEL_PX, left + PANEL_PX:] == colour, axis=-1).sum() > 20
    # Every other voxel of the error row is plain grey ADC.
    for y in range(size):
        for x in range(size):
            if not any((y, x) in voxels for voxels in expected.values()):
                red, green, blue = panel[round((y + 0.5) * voxel_px), round((x + 0.5) * voxel_px)]
                assert red == green == blue > 0


def test_zadc_is_black_outside_the_brain(tmp_path: Path) -> None:
    zadc_values = np.full(SHAPE_ZYX, 3.0, dtype=np.float32)  # non-zero everywhere, outside the brain too
    out = tmp_path / "qc.png"
    write_qc(adc(), image(zadc_values), mask_on([4]), mask_on([4]), out, settings=QcSettings(margin_mm=6.0))
    pixels = read_png(out)
    top = round((TITLE_INCHES + HEADER_INCHES + PANEL_INCHES) * DPI)
    left = round(LABEL_INCHES * DPI)
    panel = pixels[top + 2:top + PANEL_PX - 2, left + 2:left + PANEL_PX - 2].astype(int)
    coloured = panel.max(axis=-1) > 10
    assert coloured.any() and (~coloured).any()  # brain drawn in colour, a black margin around it
    assert not np.any(panel[~coloured] > 10)


def test_thumbnail_is_the_error_row_of_the_slices_with_most_error(tmp_path: Path) -> None:
    thumbnail = tmp_path / "thumb.png"
    write_qc(adc(), zadc(), mask_on([2, 3, 4, 5, 6]), mask_on([3]), tmp_path / "qc.png", thumbnail=thumbnail)
    pixels = read_png(thumbnail)
    side = round(THUMBNAIL_PANEL_INCHES * DPI)
    assert pixels.shape[:2] == (side, 4 * side)


def test_rejects_images_of_different_sizes(tmp_path: Path) -> None:
    small = image(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="size"):
        write_qc(adc(), zadc(), small, None, tmp_path / "qc.png")


def test_rejects_unknown_views() -> None:
    with pytest.raises(ConfigError, match="--views"):
        QcSettings(views=("axial", "oblique"))


def write_inputs(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.mha" for name in ("adc", "zadc", "truth", "pred")}
    for name, picture in (("adc", adc()), ("zadc", zadc()), ("truth", mask_on([4])), ("pred", mask_on([5]))):
        sitk.WriteImage(picture, str(paths[name]))
    return paths


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hieseg.qc", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_cli_writes_the_png_and_thumbnail(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path)
    out, thumbnail = tmp_path / "montage.png", tmp_path / "thumb.png"
    result = run_cli(*(f"--{k}={v}" for k, v in paths.items()), f"--out={out}", f"--thumbnail={thumbnail}",
                     "--views", "axial", "sagittal")
    assert result.returncode == 0, result.stderr
    assert "axial slices [4, 5]" in result.stdout
    assert read_png(out).shape[:2] == expected_size([2, 4])
    assert read_png(thumbnail).shape[1] == 2 * round(THUMBNAIL_PANEL_INCHES * DPI)


def test_cli_refuses_a_bad_view_in_one_line(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path)
    out = tmp_path / "montage.png"
    result = run_cli(*(f"--{k}={v}" for k, v in paths.items()), f"--out={out}", "--views", "oblique")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--views" in result.stderr
    assert not out.exists()
