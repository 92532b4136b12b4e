"""Quality-control picture of one case: where the prediction is right, where it misses, where it over-calls.

The command line is :mod:`hieseg.cli.qc`. The picture is cropped to the brain (ADC > 0, with the lesions) plus a margin, so a
lesion of a few voxels is not a speck in a mostly empty field. For each view (axial by default;
``views`` adds coronal and sagittal) it has three rows over the same slices:

* **ADC** in a fixed physical window, 0 to 2000 × 10⁻⁶ mm²/s, with its colour bar;
* **Z_ADC** in the symmetric window -6 to 6 on a diverging colour map (low = red), with its
  colour bar; outside the brain it is black, as in the ADC row;
* **errors**: the dimmed ADC with every lesion voxel filled, opaque, by what it is: true
  positive, false negative (missed) or false positive (over-called), in three colours of the
  Okabe-Ito palette that stay distinct under every common colour-vision deficiency, with a
  legend giving each class's volume. Without a truth the row shows the prediction alone.

Slices: every slice (of the view) that holds truth or prediction; when there are more than
``max_slices``, those with the most error voxels (FN + FP), ties broken by lesion voxels; shown
in anatomical order. With no lesion anywhere, a few evenly spaced brain slices. The title gives the
case id, Dice, MASD and NSD (:func:`hieseg.evaluation.metrics.score_case`, brain = ADC > 0) and the truth and
predicted volumes. Pixels keep their physical aspect ratio; axial slices are drawn as stored,
coronal and sagittal ones with the last image axis (z) upwards.

A thumbnail is a small picture of the error row alone on the axial slices with the most error,
for tables of many cases (:mod:`hieseg.reports.html`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hieseg.errors import ConfigError, ImageError
from hieseg.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, CaseMetrics, score_case
from hieseg.io.brain import brain_mask
from hieseg.io.images import MM3_PER_ML, to_xyz_array, write_atomic

VIEWS = {"axial": 0, "coronal": 1, "sagittal": 2}
"""Each view and the axis of the (z, y, x) voxel array it slices."""
VIEW_AXIS_NAMES = {"axial": "z", "coronal": "y", "sagittal": "x"}
FALLBACK_SLICES = 5
"""Brain slices shown when neither mask has a lesion."""
THUMBNAIL_SLICES = 4
"""Axial slices in a thumbnail: those with the most error."""

TP, FN, FP, PREDICTED = 1, 2, 3, 4
"""Labels of the error map; PREDICTED marks the prediction when there is no truth to compare with."""
CLASS_COLOURS = {TP: "#F0E442", FN: "#D55E00", FP: "#56B4E9", PREDICTED: "#F0E442"}
"""Okabe-Ito yellow, vermillion and sky blue: distinct for protan, deutan and tritan vision, and
bright against the dimmed grey ADC underneath."""
CLASS_NAMES = {TP: "true positive", FN: "false negative (missed)", FP: "false positive", PREDICTED: "prediction"}
ERROR_ROW_BRIGHTNESS = 0.6
"""The ADC under the error classes is dimmed to this fraction so that the colours stand out."""
ZADC_COLOURMAP = "RdBu"
"""Diverging ColorBrewer map, colour-blind safe: low Z_ADC (restricted diffusion) red, high blue."""
ADC_UNITS = "ADC (10⁻⁶ mm²/s)"

PANEL_INCHES = 1.5
"""Every panel is a square of this size; the slice is letterboxed in it at its physical aspect ratio."""
LABEL_INCHES = 0.3
"""Left band holding the row names."""
SIDE_INCHES = 2.2
"""Right band holding the colour bars and the legend."""
TITLE_INCHES = 0.6
HEADER_INCHES = 0.25
"""Band above each view's panels holding the slice indices."""
THUMBNAIL_PANEL_INCHES = 0.9
DPI = 100
ROWS = ("ADC", "Z_ADC", "errors")


@dataclass(frozen=True)
class QcSettings:
    """How a QC picture is drawn; checked on construction, so a bad flag fails before any image is read."""

    max_slices: int = 12
    views: tuple[str, ...] = ("axial",)
    margin_mm: float = 8.0
    """Kept around the bounding box of the brain and the lesions."""
    adc_window: tuple[float, float] = (0.0, 2000.0)
    """Display range of ADC in 10⁻⁶ mm²/s, the same for every case so that cases compare."""
    zadc_limit: float = 6.0
    """Z_ADC is shown from -limit to +limit."""
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM

    def __post_init__(self) -> None:
        if self.max_slices < 1:
            raise ConfigError(f"--max-slices must be at least 1, got {self.max_slices}")
        unknown = [view for view in self.views if view not in VIEWS]
        if unknown or not self.views or len(set(self.views)) != len(self.views):
            raise ConfigError(f"--views: give each of {', '.join(VIEWS)} at most once, got {' '.join(self.views)}")
        if not (math.isfinite(self.margin_mm) and self.margin_mm >= 0):
            raise ConfigError(f"--margin-mm must be a finite number >= 0, got {self.margin_mm}")
        low, high = self.adc_window
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ConfigError(f"ADC window must be two finite numbers, low < high, got {self.adc_window}")
        if not (math.isfinite(self.zadc_limit) and self.zadc_limit > 0):
            raise ConfigError(f"Z_ADC limit must be a finite number > 0, got {self.zadc_limit}")


@dataclass(frozen=True)
class CaseArrays:
    """One case as (z, y, x) arrays on one grid, with the error map of the prediction against the truth."""

    adc: np.ndarray
    zadc: np.ndarray
    brain: np.ndarray
    truth: np.ndarray | None
    pred: np.ndarray
    spacing_zyx: tuple[float, float, float]
    errors: np.ndarray = field(init=False)
    """TP, FN, FP (or PREDICTED without truth) per voxel, 0 elsewhere."""

    def __post_init__(self) -> None:
        errors = np.zeros(self.pred.shape, dtype=np.uint8)
        if self.truth is None:
            errors[self.pred] = PREDICTED
        else:
            errors[self.pred & self.truth] = TP
            errors[self.truth & ~self.pred] = FN
            errors[self.pred & ~self.truth] = FP
        object.__setattr__(self, "errors", errors)

    @classmethod
    def from_images(
        cls, adc: sitk.Image, zadc: sitk.Image, pred: sitk.Image, truth: sitk.Image | None
    ) -> CaseArrays:
        images = {"Z_ADC": zadc, "prediction": pred} | ({"truth": truth} if truth is not None else {})
        for name, image in images.items():
            if image.GetSize() != adc.GetSize():
                raise ImageError(f"{name} size {image.GetSize()} differs from ADC size {adc.GetSize()}")
        adc_zyx = sitk.GetArrayFromImage(adc).astype(np.float32)
        return cls(
            adc=adc_zyx,
            zadc=sitk.GetArrayFromImage(zadc).astype(np.float32),
            brain=brain_mask(adc_zyx),
            truth=sitk.GetArrayFromImage(truth) > 0 if truth is not None else None,
            pred=sitk.GetArrayFromImage(pred) > 0,
            spacing_zyx=tuple(float(s) for s in reversed(adc.GetSpacing())),  # type: ignore[arg-type]
        )

    def lesion(self) -> np.ndarray:
        return self.errors > 0

    def error(self) -> np.ndarray:
        return (self.errors == FN) | (self.errors == FP)

    def volume_ml(self, label: int) -> float:
        return int(np.count_nonzero(self.errors == label)) * float(np.prod(self.spacing_zyx)) / MM3_PER_ML


@dataclass(frozen=True)
class QcResult:
    """What a QC picture shows: the slice indices of each view and the case's scores (None without truth)."""

    slices: dict[str, list[int]]
    metrics: CaseMetrics | None


def write_qc(
    adc: sitk.Image,
    zadc: sitk.Image,
    pred: sitk.Image,
    truth: sitk.Image | None,
    out: Path,
    *,
    case_id: str = "",
    settings: QcSettings = QcSettings(),
    thumbnail: Path | None = None,
    metrics: CaseMetrics | None = None,
) -> QcResult:
    """Draw the QC picture as a PNG at ``out`` (and the thumbnail, if asked); return what it shows.

    ``metrics`` are this case's scores when the caller has them already; otherwise they are
    computed here (when a truth is given).
    """
    case = CaseArrays.from_images(adc, zadc, pred, truth)
    if metrics is None and truth is not None:
        metrics = score_case(
            to_xyz_array(pred, np.uint8) > 0,
            to_xyz_array(truth, np.uint8) > 0,
            adc.GetSpacing(),
            brain=case.brain.transpose(2, 1, 0),
            nsd_tolerance_mm=settings.nsd_tolerance_mm,
            case_id=case_id,
        )
    crop = brain_crop(case, settings.margin_mm)
    slices = {
        view: select_slices(case.lesion(), case.error(), case.brain, VIEWS[view], settings.max_slices)
        for view in settings.views
    }
    _draw_picture(case, crop, slices, _title(case, case_id, metrics), settings, Path(out))
    if thumbnail is not None:
        axial = select_slices(case.lesion(), case.error(), case.brain, VIEWS["axial"], THUMBNAIL_SLICES)
        _draw_thumbnail(case, crop, axial, settings, Path(thumbnail))
    return QcResult(slices=slices, metrics=metrics)


def brain_crop(case: CaseArrays, margin_mm: float) -> tuple[slice, slice, slice]:
    """Bounding box (z, y, x) of the brain and both masks, widened by ``margin_mm`` and clipped to the image."""
    content = case.brain | case.lesion()
    if not content.any():
        return tuple(slice(0, n) for n in content.shape)  # type: ignore[return-value]
    crop = []
    for axis, (size, spacing) in enumerate(zip(content.shape, case.spacing_zyx)):
        present = np.flatnonzero(content.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = math.ceil(margin_mm / spacing)
        crop.append(slice(max(0, int(present[0]) - margin), min(size, int(present[-1]) + 1 + margin)))
    return tuple(crop)  # type: ignore[return-value]


def select_slices(
    lesion: np.ndarray, error: np.ndarray, brain: np.ndarray, axis: int, max_slices: int
) -> list[int]:
    """Slices along ``axis`` to show, in ascending order.

    Every slice holding lesion (truth or prediction) when they are at most ``max_slices``;
    otherwise the ``max_slices`` of them with the most error voxels, ties broken by the most
    lesion voxels, then the lower index. Without lesion, evenly spaced brain slices.
    """
    others = tuple(a for a in range(3) if a != axis)
    lesion_counts = lesion.sum(axis=others)
    with_lesion = np.flatnonzero(lesion_counts)
    if with_lesion.size:
        if with_lesion.size <= max_slices:
            return [int(i) for i in with_lesion]
        error_counts = error.sum(axis=others)
        ranked = sorted(with_lesion, key=lambda i: (-error_counts[i], -lesion_counts[i], i))
        return sorted(int(i) for i in ranked[:max_slices])
    with_brain = np.flatnonzero(brain.any(axis=others))
    candidates = with_brain if with_brain.size else np.arange(brain.shape[axis])
    return evenly_spaced(candidates, min(max_slices, FALLBACK_SLICES))


def evenly_spaced(indices: np.ndarray, count: int) -> list[int]:
    """At most ``count`` of ``indices``, evenly spread; the first and last are kept when ``count`` > 1."""
    if len(indices) <= count:
        return [int(i) for i in indices]
    positions = np.unique(np.round(np.linspace(0, len(indices) - 1, count)).astype(int))
    return [int(indices[p]) for p in positions]


def picture_size_px(settings: QcSettings, slice_counts: Sequence[int]) -> tuple[int, int]:
    """(width, height) in pixels of a QC picture with these numbers of slices per view."""
    width = LABEL_INCHES + PANEL_INCHES * max(slice_counts) + SIDE_INCHES
    height = TITLE_INCHES + len(slice_counts) * (HEADER_INCHES + len(ROWS) * PANEL_INCHES)
    return round(width * DPI), round(height * DPI)


def _draw_picture(
    case: CaseArrays,
    crop: tuple[slice, slice, slice],
    slices: dict[str, list[int]],
    title: str,
    settings: QcSettings,
    out: Path,
) -> None:
    """The full picture: title band, then per view a header band and the three rows, bars and legend on the right."""
    width_px, height_px = picture_size_px(settings, [len(s) for s in slices.values()])
    width, height = width_px / DPI, height_px / DPI
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="black")
    FigureCanvasAgg(figure)
    figure.text(0.5, 1 - 0.08 / height, title, color="white", fontsize=10, ha="center", va="top", linespacing=1.5)
    top = TITLE_INCHES
    adc_norm = Normalize(*settings.adc_window)
    zadc_norm = Normalize(-settings.zadc_limit, settings.zadc_limit)
    for view, indices in slices.items():
        top += HEADER_INCHES
        for row_index, row in enumerate(ROWS):
            row_top = top + row_index * PANEL_INCHES
            for column, index in enumerate(indices):
                box = (LABEL_INCHES + column * PANEL_INCHES, row_top, PANEL_INCHES, PANEL_INCHES)
                axes = figure.add_axes(_fraction(box, width, height))
                _draw_panel(axes, case, crop, view, index, row, settings)
                if row_index == 0:
                    axes.set_title(f"{view} {VIEW_AXIS_NAMES[view]} = {index}", color="white", fontsize=8, pad=3)
            figure.text(
                0.5 * LABEL_INCHES / width, 1 - (row_top + PANEL_INCHES / 2) / height, row,
                color="white", fontsize=9, rotation=90, ha="center", va="center",
            )
            side = _fraction((LABEL_INCHES + len(indices) * PANEL_INCHES + 0.15, row_top + 0.1, 0.12,
                              PANEL_INCHES - 0.2), width, height)
            if row == "ADC":
                _colour_bar(figure, side, ScalarMappable(adc_norm, "gray"), ADC_UNITS)
            elif row == "Z_ADC":
                _colour_bar(figure, side, ScalarMappable(zadc_norm, ZADC_COLOURMAP), "Z_ADC")
            else:
                _legend(figure, side, case)
        top += len(ROWS) * PANEL_INCHES
    write_atomic(out, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI, facecolor="black"))


def _draw_thumbnail(
    case: CaseArrays, crop: tuple[slice, slice, slice], indices: list[int], settings: QcSettings, out: Path
) -> None:
    """The error row alone, no text: a row of small axial panels."""
    width, height = THUMBNAIL_PANEL_INCHES * len(indices), THUMBNAIL_PANEL_INCHES
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="black")
    FigureCanvasAgg(figure)
    for column, index in enumerate(indices):
        axes = figure.add_axes((column / len(indices), 0.0, 1 / len(indices), 1.0))
        _draw_panel(axes, case, crop, "axial", index, "errors", settings)
    write_atomic(out, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI, facecolor="black"))


def _draw_panel(
    axes, case: CaseArrays, crop: tuple[slice, slice, slice], view: str, index: int, row: str, settings: QcSettings
) -> None:
    """One slice of one row, at its physical aspect ratio, on black."""
    plane = _plane_of(view, index, crop)
    spacing = case.spacing_zyx
    if view == "axial":
        aspect, origin = spacing[1] / spacing[2], "upper"
    elif view == "coronal":
        aspect, origin = spacing[0] / spacing[2], "lower"
    else:
        aspect, origin = spacing[0] / spacing[1], "lower"
    common = {"aspect": aspect, "origin": origin, "interpolation": "nearest"}
    if row == "ADC":
        axes.imshow(case.adc[plane], cmap="gray", vmin=settings.adc_window[0], vmax=settings.adc_window[1], **common)
    elif row == "Z_ADC":
        values = np.ma.masked_where(~case.brain[plane], case.zadc[plane])
        colours = colormaps[ZADC_COLOURMAP].with_extremes(bad="black")
        axes.imshow(values, cmap=colours, vmin=-settings.zadc_limit, vmax=settings.zadc_limit, **common)
    else:
        axes.imshow(_error_rgb(case.adc[plane], case.errors[plane], settings.adc_window), **common)
    axes.set_facecolor("black")
    axes.set_axis_off()


def _plane_of(view: str, index: int, crop: tuple[slice, slice, slice]) -> tuple[slice | int, ...]:
    """Index of one slice of the cropped (z, y, x) volume."""
    plane: list[slice | int] = list(crop)
    plane[VIEWS[view]] = index
    return tuple(plane)


def _error_rgb(adc: np.ndarray, errors: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """uint8 RGB picture: dimmed grey ADC, each error class painted opaque in its exact colour."""
    low, high = window
    grey = np.clip((adc - low) / (high - low), 0.0, 1.0) * ERROR_ROW_BRIGHTNESS * 255
    rgb = np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=-1)
    for label, colour in CLASS_COLOURS.items():
        rgb[errors == label] = rgb_bytes(colour)
    return rgb


def rgb_bytes(colour: str) -> tuple[int, int, int]:
    """A matplotlib colour as three 0-255 integers."""
    return tuple(round(255 * c) for c in to_rgb(colour))  # type: ignore[return-value]


def _colour_bar(figure: Figure, box: tuple[float, float, float, float], mappable: ScalarMappable, label: str) -> None:
    bar = figure.colorbar(mappable, cax=figure.add_axes(box))
    bar.set_label(label, color="white", fontsize=8)
    bar.ax.tick_params(colors="white", labelsize=7)
    bar.outline.set_edgecolor("white")


def _legend(figure: Figure, box: tuple[float, float, float, float], case: CaseArrays) -> None:
    """The error classes (or the prediction alone, without truth), each with its volume in ml."""
    axes = figure.add_axes(box)
    axes.set_axis_off()
    labels = (PREDICTED,) if case.truth is None else (TP, FN, FP)
    handles = [
        Patch(facecolor=CLASS_COLOURS[label], edgecolor="none", label=f"{CLASS_NAMES[label]}\n{case.volume_ml(label):.2f} ml")
        for label in labels
    ]
    axes.legend(handles=handles, loc="center left", frameon=False, labelcolor="white", fontsize=8,
                handlelength=1.2, labelspacing=1.0, borderaxespad=0.0)


def _title(case: CaseArrays, case_id: str, metrics: CaseMetrics | None) -> str:
    name = case_id or "case"
    voxel_ml = float(np.prod(case.spacing_zyx)) / MM3_PER_ML
    predicted = f"predicted {np.count_nonzero(case.pred) * voxel_ml:.2f} ml"
    if metrics is None:
        return f"{name}\n{predicted} (no truth given)"
    burden = "" if math.isnan(metrics.burden_fraction) else (
        f" · burden {100 * metrics.burden_fraction:.2f} % of brain ({metrics.burden_group})"
    )
    return (
        f"{name}   Dice {metrics.dice:.3f} · MASD {_number(metrics.masd_mm, 2)} mm · NSD {metrics.nsd:.3f}\n"
        f"truth {metrics.truth_ml:.2f} ml · {predicted}{burden}"
    )


def _number(value: float, decimals: int) -> str:
    """A score as text; "–" for NaN (a MASD the official conventions leave undefined)."""
    return "–" if math.isnan(value) else f"{value:.{decimals}f}"


def _fraction(box_inches: tuple[float, float, float, float], width: float, height: float) -> tuple[float, ...]:
    """(left, top, width, height) in inches from the top-left corner to matplotlib's figure fractions."""
    left, top, box_width, box_height = box_inches
    return (left / width, 1 - (top + box_height) / height, box_width / width, box_height / height)
