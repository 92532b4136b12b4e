"""What counts as brain, in one place: the voxels where the skull-stripped ADC is above 0.

ADC is a diffusion coefficient, positive in tissue, so the brain is ``ADC > 0`` whatever value
the skull stripping left outside it (0, -1, -1000). The preprocessing (``hieseg.data.transforms``)
sets both channels to 0 outside this brain before anything else, so the brain crop, the
normalisation and the training patches see it alone; the predictor never marks a voxel outside
it; the metrics take their burden from it. Inputs that contradict it are reported here: no brain
at all is an error, as are intensities no brain has (:mod:`hieseg.io.intensities`), and a Z_ADC
that is non-zero far outside the brain, a negative ADC background or lesion labels outside the
brain are logged as warnings naming the file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hieseg.errors import ImageError
from hieseg.io.images import to_xyz_array
from hieseg.io.intensities import check_intensities

LOG = logging.getLogger(__name__)
FAR_OUTSIDE_MM = 10.0
"""Z_ADC is smoothed by 2 mm, so it may spill a little past the brain; beyond this margin around
the brain's bounding box it has no business being non-zero."""


def brain_mask(adc: np.ndarray) -> np.ndarray:
    """The brain of an ADC array (any axis order): True where ADC > 0."""
    return np.asarray(adc) > 0


def brain_of(adc: sitk.Image) -> np.ndarray:
    """The brain of an ADC image as a boolean (x, y, z) array."""
    return brain_mask(to_xyz_array(adc))


def check_brain(
    adc: sitk.Image,
    adc_path: Path,
    zadc: sitk.Image,
    zadc_path: Path,
    label: sitk.Image | None = None,
    label_path: Path | None = None,
) -> None:
    """Refuse an ADC without brain, or with intensities no brain has (:func:`hieseg.io.intensities.check_intensities`:
    units, background, impossible voxels, a Z_ADC outside +-10); warn, naming the file, where the images contradict
    its brain."""
    adc_array = sitk.GetArrayViewFromImage(adc)
    brain = brain_mask(adc_array)
    brain_voxels = int(brain.sum())
    if brain_voxels == 0:
        raise ImageError(f"{adc_path}: no brain voxels (the skull-stripped ADC has no value above 0)")
    check_intensities(adc_array, adc_path, sitk.GetArrayViewFromImage(zadc), zadc_path)
    negative = int((adc_array < 0).sum())
    if negative:
        LOG.warning("%s: %d voxel(s) below 0 (lowest %g) taken as outside the brain, which is ADC > 0",
                    adc_path, negative, float(adc_array.min()))
    far = _far_outside(brain, adc.GetSpacing()[::-1])
    stray = int(np.logical_and(sitk.GetArrayViewFromImage(zadc) != 0, far).sum())
    if stray:
        LOG.warning("%s: non-zero in %d voxel(s) more than %g mm outside the brain of %s (%d brain voxels); "
                    "is it the partner of this ADC? Z_ADC outside the brain is ignored",
                    zadc_path, stray, FAR_OUTSIDE_MM, adc_path, brain_voxels)
    if label is not None:
        outside = int(np.logical_and(sitk.GetArrayViewFromImage(label) != 0, ~brain).sum())
        if outside:
            LOG.warning("%s: %d lesion voxel(s) outside the brain of %s (ADC <= 0); no prediction can reach them",
                        label_path, outside, adc_path)


def _far_outside(brain: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxels beyond the brain's bounding box grown by FAR_OUTSIDE_MM; ``spacing`` in the array's axis order."""
    far = np.ones(brain.shape, dtype=bool)
    box = []
    for axis, step in enumerate(spacing):
        present = np.flatnonzero(brain.any(axis=tuple(a for a in range(brain.ndim) if a != axis)))
        margin = math.ceil(FAR_OUTSIDE_MM / step)
        box.append(slice(max(0, int(present[0]) - margin), int(present[-1]) + margin + 1))
    far[tuple(box)] = False
    return far
