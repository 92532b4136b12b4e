"""Lesion burden: the lesion's share of the brain, and the challenge's three groups of it.

The brain is the voxels where the skull-stripped ADC is above 0 (:mod:`hieseg.io.brain`). The
groups "<1%", "1-5%" (both ends included) and ">5%" are how the challenge reports its scores;
the folds are stratified by them (:mod:`hieseg.data.splits`), and every report breaks its
scores down by them (:mod:`hieseg.evaluation.metrics`).
"""

from __future__ import annotations

import math

import SimpleITK as sitk

from hieseg.io.brain import brain_of
from hieseg.io.layout import CaseImages

BURDEN_LOW = 0.01
"""Lesion fractions below this are in the "<1%" group."""
BURDEN_HIGH = 0.05
"""Lesion fractions above this are in the ">5%" group."""
BURDEN_GROUPS = ("<1%", "1-5%", ">5%")
UNKNOWN_GROUP = "unknown"
"""Burden group of a case whose brain volume is not known."""


def burden_group(fraction: float) -> str:
    """Group of a lesion fraction of brain volume: "<1%", "1-5%" (ends included), ">5%"; "unknown" for NaN."""
    if math.isnan(fraction):
        return UNKNOWN_GROUP
    if fraction < BURDEN_LOW:
        return BURDEN_GROUPS[0]
    if fraction <= BURDEN_HIGH:
        return BURDEN_GROUPS[1]
    return BURDEN_GROUPS[2]


def lesion_burden(case: CaseImages) -> float:
    """Lesion voxels as a fraction of brain voxels (ADC > 0); 0 for a case without a label."""
    brain = int(brain_of(case.adc).sum())
    lesion = int(sitk.GetArrayViewFromImage(case.label).sum()) if case.label is not None else 0
    return lesion / brain if brain else 0.0
