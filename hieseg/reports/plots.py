"""Plots shared by the evaluation, comparison and study reports: per-case metric boxes and validation curves.

Distances need care: a method that fails on a case (an empty mask on a lesioned case) scores
MASD = the image diagonal, some 300 mm, while working methods score a few mm. On a linear axis
one such method flattens every other box to a line at the bottom. The MASD panel therefore uses
a symmetric-log axis (linear below :data:`MASD_LINEAR_BELOW_MM`, logarithmic above, so the 0 of
two empty masks stays drawable), and says how many cases of each method sit at that cap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hieseg.evaluation.metrics import METRIC_TITLES, SUMMARY_METRICS, CaseMetrics
from hieseg.io.images import write_atomic

DISTANCE_METRICS = ("masd_mm",)
MASD_LINEAR_BELOW_MM = 1.0
"""The MASD axis is linear from 0 to this, logarithmic above."""
PANEL_INCHES = 4.0
DPI = 110
POINT_JITTER = 0.12
"""Half-width of the horizontal scatter of the per-case points over each box."""
POINT_COLOUR = "#0072B2"


def one_empty_count(rows: Sequence[CaseMetrics]) -> int:
    """Cases with exactly one empty mask, scored MASD = the image diagonal."""
    return sum(1 for row in rows if (row.truth_ml == 0) != (row.pred_ml == 0))


def plot_metric_boxes(
    rows_by_method: Mapping[str, Sequence[CaseMetrics]], path: Path, metrics: Sequence[str] = SUMMARY_METRICS
) -> None:
    """One panel per metric, one box per method with its cases as points; MASD on a symmetric-log axis."""
    methods = list(rows_by_method)
    figure = Figure(figsize=(PANEL_INCHES * len(metrics), PANEL_INCHES + 0.25 * max(len(methods) - 3, 0)))
    FigureCanvasAgg(figure)
    jitter = np.random.default_rng(0)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        values = [[value for row in rows_by_method[method] if _drawable(value := getattr(row, metric))]
                  for method in methods]
        axes.boxplot(values, tick_labels=methods, showfliers=False, widths=0.5)
        for position, method_values in enumerate(values, start=1):
            offsets = jitter.uniform(-POINT_JITTER, POINT_JITTER, len(method_values))
            axes.scatter(position + offsets, method_values, s=9, color=POINT_COLOUR, alpha=0.6, zorder=3)
        title = METRIC_TITLES[metric]
        if metric in DISTANCE_METRICS:
            axes.set_yscale("symlog", linthresh=MASD_LINEAR_BELOW_MM)
            capped = ", ".join(str(one_empty_count(rows_by_method[method])) for method in methods)
            title += f"\nlog axis above {MASD_LINEAR_BELOW_MM:g} mm; at the cap (one empty mask): {capped}"
        axes.set_title(title, fontsize=9 if metric in DISTANCE_METRICS else 11)
        axes.tick_params(axis="x", labelrotation=30)
        for label in axes.get_xticklabels():
            label.set_horizontalalignment("right")
        axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI))


def _drawable(value: float | None) -> bool:
    """Whether a score can be drawn: not missing, and not NaN (an undefined MASD under official conventions)."""
    return value is not None and math.isfinite(value)


def plot_validation_curves(curves: Mapping[str, Mapping[int, float]], path: Path) -> None:
    """Validation Dice against epoch, one line per method (e.g. a loss, mean over folds)."""
    figure = Figure(figsize=(1.5 * PANEL_INCHES, PANEL_INCHES))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        axes.plot(list(curve), list(curve.values()), marker="o", label=name)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("validation Dice (mean over folds)")
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize="small")
    figure.tight_layout()
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI))
