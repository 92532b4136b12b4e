"""Lesion-wise scores, as the WMH and MSSEG challenges report them: which lesions are found, and which are missed.

A lesion is a connected component of a mask with 6-connectivity (voxels sharing a face; the
cleaned Z_ADC baseline, :mod:`hieseg.evaluation.baselines`, cuts its specks the same way). A truth
lesion is **found** when at least one predicted voxel lies in it; a predicted lesion is **true**
when at least one of its voxels lies in the truth.

* lesion-wise sensitivity = found truth lesions / truth lesions;
* lesion-wise precision = true predicted lesions / predicted lesions;
* lesion-wise F1 = their harmonic mean;
* missed lesions by volume: the truth lesions not found, counted in the bins of ``VOLUME_BINS_MM3``;
* **conspicuous lesions**: truth lesions of at least ``CONSPICUOUS_MIN_VOXELS`` voxels whose median
  Z_ADC is at or below ``CONSPICUOUS_Z``, plainly visible on the map; their recall is the share found.
  It needs the case's Z_ADC and is ``None`` without it.

Per case these are counts; :func:`pooled` adds the counts of many cases before dividing, so a set's
sensitivity is the share of all its lesions that were found (a case without lesions weighs nothing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FACE_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)
"""6-connectivity: voxels sharing a face belong to one lesion; an edge or a corner is not enough."""
CONSPICUOUS_Z = -3.0
CONSPICUOUS_MIN_VOXELS = 3
VOLUME_BINS_MM3 = (10.0, 100.0, 1000.0)
"""Edges of the bins of missed lesions' volumes: <10, 10-100, 100-1000 and >=1000 mm^3."""
MISSED_FIELDS = ("missed_lt10_mm3", "missed_10_100_mm3", "missed_100_1000_mm3", "missed_ge1000_mm3")
"""The per-case count of missed truth lesions in each volume bin, in the bins' order."""
COUNT_FIELDS = ("truth_lesions", "found_lesions", "pred_lesions", "true_pred_lesions", *MISSED_FIELDS,
                "conspicuous_lesions", "conspicuous_found")
"""The lesion-wise counts every scored case carries (:class:`hieseg.evaluation.metrics.CaseMetrics`)."""
RATES = ("lesion_sensitivity", "lesion_precision", "lesion_f1", "conspicuous_recall")
"""The lesion-wise rates of a set of cases, from pooled counts."""


@dataclass(frozen=True)
class LesionCounts:
    """One case's lesion-wise counts (``conspicuous_*`` ``None`` when its Z_ADC was not given)."""

    truth_lesions: int
    found_lesions: int
    pred_lesions: int
    true_pred_lesions: int
    missed_lt10_mm3: int
    missed_10_100_mm3: int
    missed_100_1000_mm3: int
    missed_ge1000_mm3: int
    conspicuous_lesions: int | None
    conspicuous_found: int | None


def lesion_counts(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float], zadc: np.ndarray | None = None
) -> LesionCounts:
    """Lesion-wise counts of a boolean prediction against a boolean truth, arrays (x, y, z), spacing in mm."""
    truth_labels, truth_count = ndimage.label(truth, structure=FACE_CONNECTIVITY)
    pred_labels, pred_count = ndimage.label(pred, structure=FACE_CONNECTIVITY)
    found = np.zeros(truth_count + 1, dtype=bool)
    found[np.unique(truth_labels[pred & truth])] = True
    true_pred = np.unique(pred_labels[pred & truth])
    voxels = np.bincount(truth_labels.ravel(), minlength=truth_count + 1)
    volumes = voxels * float(np.prod(spacing))
    missed = [index for index in range(1, truth_count + 1) if not found[index]]
    bins = np.digitize([volumes[index] for index in missed], VOLUME_BINS_MM3)
    per_bin = np.bincount(bins, minlength=len(VOLUME_BINS_MM3) + 1) if missed else np.zeros(len(MISSED_FIELDS), int)
    conspicuous = conspicuous_found = None
    if zadc is not None:
        medians = ndimage.median(np.asarray(zadc, dtype=np.float64), truth_labels, np.arange(1, truth_count + 1))
        visible = [index for index, median in zip(range(1, truth_count + 1), np.atleast_1d(medians))
                   if voxels[index] >= CONSPICUOUS_MIN_VOXELS and median <= CONSPICUOUS_Z]
        conspicuous, conspicuous_found = len(visible), int(sum(found[index] for index in visible))
    return LesionCounts(
        truth_lesions=truth_count,
        found_lesions=int(found[1:].sum()),
        pred_lesions=pred_count,
        true_pred_lesions=int(np.count_nonzero(true_pred)),
        **{name: int(count) for name, count in zip(MISSED_FIELDS, per_bin)},
        conspicuous_lesions=conspicuous,
        conspicuous_found=conspicuous_found,
    )


def pooled(rows: Iterable[Mapping[str, int | None]]) -> dict[str, float | int | None]:
    """The counts of ``rows`` (one mapping of ``COUNT_FIELDS`` per case) added up, and the rates from them.

    A rate is ``None`` when its denominator is 0 (no lesion to find, no prediction to judge); the
    conspicuous counts and recall are ``None`` unless every case has them.
    """
    rows = list(rows)
    totals: dict[str, float | int | None] = {}
    for name in COUNT_FIELDS:
        values = [row[name] for row in rows]
        totals[name] = None if any(value is None for value in values) else int(sum(values))
    totals["lesion_sensitivity"] = _share(totals["found_lesions"], totals["truth_lesions"])
    totals["lesion_precision"] = _share(totals["true_pred_lesions"], totals["pred_lesions"])
    sensitivity, precision = totals["lesion_sensitivity"], totals["lesion_precision"]
    totals["lesion_f1"] = (None if sensitivity is None or precision is None
                           else 0.0 if sensitivity + precision == 0 else
                           2 * sensitivity * precision / (sensitivity + precision))
    totals["conspicuous_recall"] = _share(totals["conspicuous_found"], totals["conspicuous_lesions"])
    return totals


def _share(part: int | None, whole: int | None) -> float | None:
    return None if part is None or not whole else part / whole


LESION_HEADER = ("lesions found", "lesion sensitivity", "lesion precision", "lesion F1",
                 "conspicuous found", "conspicuous recall", "missed <10 / 10-100 / 100-1000 / >=1000 mm³")
"""Column titles of a lesion-wise table (:func:`lesion_cells`)."""
LESION_NOTE = ("Lesion-wise: connected components with 6-connectivity; a truth lesion is found when a predicted "
               "voxel lies in it, a predicted lesion is true when one of its voxels lies in the truth; counts are "
               "added over the cases before dividing. Conspicuous: truth lesions of at least 3 voxels with median "
               "Z_ADC <= -3 (needs the Z_ADC images). Missed: truth lesions not found, by volume.")


def lesion_cells(totals: Mapping[str, float | int | None] | None) -> list[str]:
    """One table row's cells of :data:`LESION_HEADER` from :func:`pooled` totals (dashes when there are none)."""
    if totals is None:
        return ["–"] * len(LESION_HEADER)
    conspicuous = ("–" if totals["conspicuous_lesions"] is None
                   else f"{totals['conspicuous_found']}/{totals['conspicuous_lesions']}")
    return [
        f"{totals['found_lesions']}/{totals['truth_lesions']}",
        describe_rate(totals["lesion_sensitivity"]),
        describe_rate(totals["lesion_precision"]),
        describe_rate(totals["lesion_f1"]),
        conspicuous,
        describe_rate(totals["conspicuous_recall"]),
        " / ".join(str(totals[name]) for name in MISSED_FIELDS),
    ]


def describe_rate(value: float | None) -> str:
    """A rate for a table: three decimals, or a dash when there was nothing to count."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
