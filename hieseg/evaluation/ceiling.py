"""The resampling ceiling: the best Dice any model predicting on a given grid can reach.

The network sees each case resampled to ``preprocess.target_spacing`` and its prediction is
brought back to the native grid. Even a perfect prediction on the network's grid is the
truth after that round trip, so its Dice against the native truth bounds every model with
that target spacing from above; small lesions on fine native grids lose most. Comparing a
model's Dice with this ceiling tells whether the network or the grid is what falls short.

The round trip is the predictor's own: the 0/1 truth is resampled as a float image by the
same MONAI ``Spacingd`` (bilinear) that :func:`hieseg.data.transforms.preprocess_transforms`
applies to the input, brought back by :func:`hieseg.data.resampling.invert_resampling_on_support`
as :meth:`hieseg.inference.predictor.Predictor.to_native` does, and thresholded at 0.5. The brain
crop in between is left out: it keeps every voxel a lesion can be in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Spacingd

from hieseg.config.settings import PreprocessConfig
from hieseg.data.resampling import invert_resampling_on_support
from hieseg.data.transforms import IMAGE, resampling
from hieseg.evaluation.metrics import checked_spacing, dice_score
from hieseg.io.images import Geometry, to_xyz_array

ROUND_TRIP_THRESHOLD = 0.5
"""A native voxel is lesion after the round trip when its interpolated value is at least this."""


def resampling_ceiling(label_image: sitk.Image, target_spacing: Sequence[float]) -> float:
    """Dice between a 0/1 label and itself after a round trip through a grid of ``target_spacing`` mm.

    1.0 when the label is empty (both masks empty), as in :func:`hieseg.evaluation.metrics.dice_score`.
    """
    truth = to_xyz_array(label_image, np.float32)
    if np.logical_and(truth != 0, truth != 1).any():
        values = np.unique(truth)[:8].tolist()
        raise ValueError(f"the label must be binary 0/1 for its resampling ceiling, found values {values}")
    return dice_score(round_trip(label_image, target_spacing) >= ROUND_TRIP_THRESHOLD, truth != 0)


def round_trip(image: sitk.Image, target_spacing: Sequence[float]) -> np.ndarray:
    """An image's values, axes (x, y, z), after resampling to ``target_spacing`` and back as the predictor does."""
    affine = torch.as_tensor(Geometry.of(image).affine(), dtype=torch.float64)
    native = MetaTensor(to_xyz_array(image, np.float32)[None], affine=affine)
    resampled = resampling_step(target_spacing)({IMAGE: native})[IMAGE]
    return invert_resampling_on_support(resampled)[0].numpy()


def resampling_step(target_spacing: Sequence[float]) -> Spacingd:
    """The predictor's resampling of the image (bilinear, :func:`hieseg.data.transforms.resampling`) to this grid."""
    return resampling(PreprocessConfig(target_spacing=checked_spacing(tuple(target_spacing))), [(IMAGE, "bilinear")])
