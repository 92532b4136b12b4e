"""The network grid derived from the training data, as nnU-Net plans it.

A fixed coarse grid caps what any model can reach on small lesions: resampling a truth
label to 1.5 x 1.5 x 3 mm and back already loses a tenth of its Dice on the synthetic
cases, and far more on lesions of a few voxels. The median spacing of the data keeps
half the cases at or above their native resolution while the network still sees one
physical scale (``python -m hieseg.evaluate --model`` reports the resulting ceiling); a lower
percentile (``preprocess.spacing_percentile``) keeps more of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hieseg.config.settings import ExperimentConfig

ANISOTROPY_RATIO = 3.0
"""An axis whose median spacing exceeds this multiple of the others' is 'anisotropic'."""
ANISOTROPIC_PERCENTILE = 10.0
"""Percentile of the spacings used instead of the median along an anisotropic axis."""
DECIMALS = 4


def data_target_spacing(spacings: Sequence[Sequence[float]], percentile: float = 50.0) -> tuple[float, float, float]:
    """The per-axis ``percentile`` of the data's spacings; a much coarser axis takes at most its 10th percentile.

    At 50 this is nnU-Net's rule, the per-axis median. A lower percentile keeps the resolution of the
    finer acquisitions: with lesions of a few voxels, a grid coarser than a case's own loses part of its
    label on the way to the network grid and back before any network is trained. For strongly anisotropic
    data the coarse axis's 10th percentile (never finer than the other axes' coarsest value) replaces a
    higher one, which would throw away the resolution of every case finer than it.
    """
    values = np.asarray(spacings, dtype=float)
    if values.ndim != 2 or values.shape[1] != 3 or values.shape[0] == 0:
        raise ValueError(f"need one (x, y, z) spacing per case, got an array of shape {values.shape}")
    target = np.percentile(values, percentile, axis=0)
    coarsest = int(np.argmax(target))
    others = np.delete(target, coarsest)
    if target[coarsest] > ANISOTROPY_RATIO * others.max():
        fine = float(np.percentile(values[:, coarsest], min(percentile, ANISOTROPIC_PERCENTILE)))
        target[coarsest] = max(fine, float(others.max()))
    return tuple(round(float(v), DECIMALS) for v in target)


def with_data_spacing(config: ExperimentConfig, spacings: Sequence[Sequence[float]]) -> ExperimentConfig:
    """The config with an unset target spacing replaced by the data's at ``preprocess.spacing_percentile``
    (an explicit one is kept)."""
    if config.preprocess.target_spacing is not None:
        return config
    target = data_target_spacing(spacings, config.preprocess.spacing_percentile)
    preprocess = dataclasses.replace(config.preprocess, target_spacing=target)
    return dataclasses.replace(config, preprocess=preprocess)
