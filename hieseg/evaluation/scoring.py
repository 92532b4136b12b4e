"""Scoring masks in memory against a case's truth: the one path from a prediction to its challenge scores.

A :class:`Reference` holds what every score of one case needs, read once: the truth as a
boolean (x, y, z) array, its spacing, the brain (ADC > 0) for the burden, and the truth image
for the resampling ceiling. Evaluation of a folder, the comparison of models and baselines, the
study, post-processing tuning and ``inference.py --truth`` all score through it, so a mask gets
the same numbers whichever of them scored it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from hieseg.evaluation.ceiling import resampling_ceiling
from hieseg.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, CaseMetrics, score_case
from hieseg.io.brain import brain_of
from hieseg.io.images import to_xyz_array
from hieseg.io.layout import CaseImages


@dataclass(frozen=True)
class Reference:
    """One case's truth (and brain) to score predicted masks against."""

    case_id: str
    truth_image: sitk.Image
    truth: np.ndarray
    """Boolean, axes (x, y, z)."""
    brain: np.ndarray | None
    """Boolean brain (ADC > 0), axes (x, y, z); ``None`` when unknown (burden group "unknown")."""
    zadc: np.ndarray | None = None
    """The case's Z_ADC, axes (x, y, z), for the conspicuous lesions; ``None`` when not at hand."""

    @classmethod
    def of(cls, truth_image: sitk.Image, brain: np.ndarray | None = None, case_id: str = "",
           zadc: np.ndarray | None = None) -> Reference:
        return cls(case_id, truth_image, to_xyz_array(truth_image, np.uint8).astype(bool), brain, zadc)

    @classmethod
    def of_case(cls, case: CaseImages, truth_image: sitk.Image | None = None) -> Reference:
        """A case's own label (or ``truth_image`` on its grid), its brain taken from its ADC, its Z_ADC."""
        label = truth_image if truth_image is not None else case.label
        if label is None:
            raise ValueError(f"case {case.files.case_id} has no label to score against")
        return cls.of(label, brain_of(case.adc), case.files.case_id, to_xyz_array(case.zadc))

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(self.truth_image.GetSpacing())  # type: ignore[return-value]

    def score(
        self,
        mask: np.ndarray | sitk.Image,
        *,
        nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
        ceiling_spacing: Sequence[float] | None = None,
        compat: str | None = None,
    ) -> CaseMetrics:
        """The challenge scores of a mask on the truth's grid (an image, or an (x, y, z) array);
        with ``ceiling_spacing``, the truth's resampling ceiling on that grid too."""
        pred = to_xyz_array(mask, np.uint8) if isinstance(mask, sitk.Image) else mask
        metrics = score_case(pred, self.truth, self.spacing, brain=self.brain, nsd_tolerance_mm=nsd_tolerance_mm,
                             case_id=self.case_id, compat=compat, zadc=self.zadc)
        if ceiling_spacing is not None:
            metrics.ceiling_dice = resampling_ceiling(self.truth_image, ceiling_spacing)
        return metrics
