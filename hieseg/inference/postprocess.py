"""Turning a lesion probability map into the final binary mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hieseg.config.settings import PostProcessing
from hieseg.inference.boundary import FULL_CONNECTIVITY, ZadcMap, zadc_boundary


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


def peak_component(probability: np.ndarray, min_peak: float) -> np.ndarray:
    """The component around the highest probability (voxels above half the peak), empty below ``min_peak``."""
    peak = float(probability.max()) if probability.size else 0.0
    if peak <= 0.0 or peak < min_peak:
        return np.zeros(probability.shape, dtype=np.uint8)
    labels, _ = ndimage.label(probability >= peak / 2.0, structure=FULL_CONNECTIVITY)
    return (labels == labels[np.unravel_index(int(np.argmax(probability)), probability.shape)]).astype(np.uint8)


def empty_below_total(mask: np.ndarray, spacing: tuple[float, float, float], min_total_mm3: float) -> np.ndarray:
    """The mask, or an empty one when its total volume is under ``min_total_mm3`` (0 keeps every mask)."""
    if min_total_mm3 > 0 and mask.any() and float(mask.sum()) * float(np.prod(spacing)) < min_total_mm3:
        return np.zeros_like(mask)
    return mask


def final_mask(probability: np.ndarray, spacing: tuple[float, float, float], settings: PostProcessing,
               zadc_map: ZadcMap | None = None) -> np.ndarray:
    """Threshold, drop small components, fall back to the peak's component if nothing is left
    (:func:`lesion_mask`), redraw each component's edge from Z_ADC (:func:`~hieseg.inference.boundary.zadc_boundary`),
    then empty a mask too small in all to call the case lesioned.

    The edge is redrawn only when ``settings.zadc_boundary`` is above 0, which needs the case's ``zadc_map``; the
    per-case decision (:func:`empty_below_total`) is off when ``settings.min_total_mm3`` is 0.
    (``tta_flips`` acts on the probability before it gets here.)
    """
    return empty_below_total(redrawn_edges(lesion_mask(probability, spacing, settings), spacing, settings, zadc_map),
                             spacing, settings.min_total_mm3)


def redrawn_edges(mask: np.ndarray, spacing: tuple[float, float, float], settings: PostProcessing,
                  zadc_map: ZadcMap | None) -> np.ndarray:
    """The mask with its edges redrawn at ``settings.zadc_boundary`` (0: unchanged, no map needed)."""
    if settings.zadc_boundary <= 0:
        return mask
    if zadc_map is None:
        raise ValueError("inference.zadc_boundary is set but no Z_ADC map was given to draw the edges from")
    return zadc_boundary(mask, zadc_map, spacing, settings.zadc_boundary)


def lesion_mask(probability: np.ndarray, spacing: tuple[float, float, float], settings: PostProcessing) -> np.ndarray:
    """Threshold, drop small components and, if nothing is left, fall back to the peak's component: the final
    mask before the per-case decision, which ``settings.min_total_mm3`` does not change.

    The fallback is off when ``settings.empty_fallback_probability`` is 0; otherwise an empty
    result whose peak probability reaches it becomes :func:`peak_component`.
    """
    mask = cleaned_mask(probability, spacing, settings.threshold, settings.min_component_mm3)
    if settings.empty_fallback_probability > 0.0 and not mask.any():
        return peak_component(probability, settings.empty_fallback_probability)
    return mask


def cleaned_mask(probability: np.ndarray, spacing: tuple[float, float, float], threshold: float,
                 min_component_mm3: float) -> np.ndarray:
    """Voxels at or above ``threshold``, without the components under ``min_component_mm3``."""
    return remove_small_components(binarize(probability, threshold), spacing, min_component_mm3)
