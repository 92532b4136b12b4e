"""Turning a lesion probability map into the final binary mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
"""26-connectivity: voxels touching by a corner belong to the same lesion."""


def binarize(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels at or above the threshold, as a uint8 0/1 mask."""
    return (probability >= threshold).astype(np.uint8)


def remove_small_components(mask: np.ndarray, spacing: tuple[float, float, float], min_volume_mm3: float) -> np.ndarray:
    """Drop connected components smaller than ``min_volume_mm3`` (specks that are rarely lesions)."""
    if min_volume_mm3 <= 0 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=FULL_CONNECTIVITY)
    voxel_mm3 = float(np.prod(spacing))
    sizes_mm3 = np.bincount(labels.ravel(), minlength=count + 1) * voxel_mm3
    keep = sizes_mm3 >= min_volume_mm3
    keep[0] = False
    return keep[labels].astype(np.uint8)
