"""Quality-control montage of one case: axial slices of ADC, Z_ADC and the lesion masks.

Usage::

    python -m hieseg.qc --adc <file> --zadc <file> [--truth <file>] --pred <file> --out <png>
                        [--max-slices 12]

Columns are the axial slices (index z of the voxel grid, drawn as stored) that hold a
lesion in the truth or the prediction, thinned to ``--max-slices`` evenly spaced ones
when there are more; with no lesion anywhere, a few evenly spaced brain slices. Rows are
ADC, Z_ADC, ADC with the truth in green (when given) and ADC with the prediction in red.
Pixels keep their physical aspect ratio. Problems with the inputs are reported as one
line on stderr, with exit status 2 (see :mod:`hieseg.cli_common`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from hieseg.brain import brain_mask
from hieseg.cli_common import run_reporting_errors
from hieseg.errors import ConfigError, ImageError
from hieseg.image_io import check_same_geometry, read_image, require_writable, write_atomic

DEFAULT_MAX_SLICES = 12
FALLBACK_SLICES = 5
"""Brain slices shown when neither mask has a lesion."""
WINDOW_PERCENTILES = (1.0, 99.0)
"""Display window of ADC and Z_ADC, as percentiles of the non-zero (brain) voxels."""
TRUTH_COLOUR = "#00d000"
PRED_COLOUR = "#ff2020"
FILL_ALPHA = 0.35
CONTOUR_WIDTH = 0.8
PANEL_INCHES = 2.0
DPI = 100


@dataclass(frozen=True)
class MontageRow:
    """One row of the montage: a (z, y, x) volume, its display window and an optional mask overlay."""

    name: str
    volume: np.ndarray
    window: tuple[float, float]
    mask: np.ndarray | None = None
    colour: str = ""


def write_montage(
    adc: sitk.Image,
    zadc: sitk.Image,
    pred: sitk.Image,
    truth: sitk.Image | None,
    out: Path,
    max_slices: int = DEFAULT_MAX_SLICES,
) -> list[int]:
    """Draw the montage as a PNG at ``out`` and return the axial slice indices shown."""
    if max_slices < 1:
        raise ConfigError(f"--max-slices must be at least 1, got {max_slices}")
    images = {"Z_ADC": zadc, "prediction": pred} | ({"truth": truth} if truth is not None else {})
    for name, image in images.items():
        if image.GetSize() != adc.GetSize():
            raise ImageError(f"{name} size {image.GetSize()} differs from ADC size {adc.GetSize()}")
    adc_zyx = sitk.GetArrayFromImage(adc).astype(np.float32)
    pred_zyx = sitk.GetArrayFromImage(pred) > 0
    truth_zyx = sitk.GetArrayFromImage(truth) > 0 if truth is not None else None
    zadc_zyx = sitk.GetArrayFromImage(zadc).astype(np.float32)
    slices = select_slices(adc_zyx, pred_zyx, truth_zyx, max_slices)
    adc_window = _window(adc_zyx)
    rows = [MontageRow("ADC", adc_zyx, adc_window), MontageRow("Z_ADC", zadc_zyx, _window(zadc_zyx))]
    if truth_zyx is not None:
        rows.append(MontageRow("truth", adc_zyx, adc_window, truth_zyx, TRUTH_COLOUR))
    rows.append(MontageRow("prediction", adc_zyx, adc_window, pred_zyx, PRED_COLOUR))
    spacing_x, spacing_y = adc.GetSpacing()[:2]
    _draw(rows, slices, spacing_y / spacing_x, Path(out))
    return slices


def select_slices(
    adc: np.ndarray, pred: np.ndarray, truth: np.ndarray | None, max_slices: int
) -> list[int]:
    """Axial slices (first axis of (z, y, x) arrays) holding lesion, else evenly spaced brain slices."""
    lesion = pred if truth is None else pred | truth
    with_lesion = np.flatnonzero(lesion.any(axis=(1, 2)))
    if with_lesion.size:
        return evenly_spaced(with_lesion, max_slices)
    with_brain = np.flatnonzero(brain_mask(adc).any(axis=(1, 2)))
    candidates = with_brain if with_brain.size else np.arange(adc.shape[0])
    return evenly_spaced(candidates, min(max_slices, FALLBACK_SLICES))


def evenly_spaced(indices: np.ndarray, count: int) -> list[int]:
    """At most ``count`` of ``indices``, evenly spread; the first and last are kept when ``count`` > 1."""
    if len(indices) <= count:
        return [int(i) for i in indices]
    positions = np.unique(np.round(np.linspace(0, len(indices) - 1, count)).astype(int))
    return [int(indices[p]) for p in positions]


def _draw(rows: list[MontageRow], slices: list[int], aspect: float, out: Path) -> None:
    """Render the grid of panels (rows x slices) with the Agg backend and save it as PNG."""
    figure = Figure(figsize=(PANEL_INCHES * len(slices), PANEL_INCHES * len(rows)), facecolor="black")
    FigureCanvasAgg(figure)
    for row_index, row in enumerate(rows):
        for column, z in enumerate(slices):
            axes = figure.add_subplot(len(rows), len(slices), row_index * len(slices) + column + 1)
            low, high = row.window
            axes.imshow(row.volume[z], cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            if row.mask is not None and row.mask[z].any():
                _overlay(axes, row.mask[z], row.colour, aspect)
            axes.set_axis_off()
            if row_index == 0:
                axes.set_title(f"z = {z}", color="white", fontsize=9)
            if column == 0:
                axes.text(
                    -0.04, 0.5, row.name, color="white", fontsize=9, rotation=90,
                    ha="right", va="center", transform=axes.transAxes,
                )
    figure.tight_layout()
    write_atomic(out, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI, facecolor="black"))


def _overlay(axes, mask: np.ndarray, colour: str, aspect: float) -> None:
    """Translucent fill plus outline of a 2D mask."""
    axes.imshow(
        np.ma.masked_where(~mask, mask), cmap=ListedColormap([colour]), alpha=FILL_ALPHA,
        aspect=aspect, interpolation="nearest",
    )
    axes.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=CONTOUR_WIDTH)


def _window(volume: np.ndarray) -> tuple[float, float]:
    """Robust display range from the non-zero voxels (the skull-stripped brain)."""
    values = volume[volume != 0]
    if values.size == 0:
        values = volume.ravel()
    low, high = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
    return (low, high) if high > low else (low, low + 1.0)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hieseg.qc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--adc", type=Path, required=True, help="skull-stripped ADC image")
    parser.add_argument("--zadc", type=Path, required=True, help="Z_ADC image")
    parser.add_argument("--truth", type=Path, help="truth lesion mask (optional)")
    parser.add_argument("--pred", type=Path, required=True, help="predicted lesion mask")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--max-slices", type=int, default=DEFAULT_MAX_SLICES, help="most slices shown")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    return run_reporting_errors(lambda: _montage(args))


def _montage(args: argparse.Namespace) -> int:
    require_writable(args.out)
    adc = read_image(args.adc)
    others = {path: read_image(path) for path in (args.zadc, args.pred, args.truth) if path is not None}
    for path, image in others.items():
        check_same_geometry(adc, args.adc, image, path)
    truth = others[args.truth] if args.truth is not None else None
    slices = write_montage(adc, others[args.zadc], others[args.pred], truth, args.out, args.max_slices)
    print(f"wrote {args.out} (axial slices {slices})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
