"""Each predicted lesion's edge redrawn where the Z_ADC map comes part of the way back from the lesion's depth.

The challenge's Z_ADC maps are smoothed with a 2 mm kernel (``..._smooth2mm_clipped10.mha``). A lesion with a sharp
edge, blurred that way, keeps its edge where the map has risen from the lesion's depth part of the way back to the
level of the tissue around it: half way for a symmetric blur of a wide lesion, less for a small one whose depth the
blur has already lowered. The network sees the same map but learns its edge from a few dozen cases; this step draws
it from the map itself, component by component. Tuning chooses the fraction, or none, on the validation cases
(``tuning.zadc_boundary``), so a source whose labels do not follow the map keeps the network's edge.

For each component of the mask: its depth is a low percentile of Z_ADC inside it, the level is the median Z_ADC of
the brain in a shell around it (outside every component), and the component becomes the voxels near it whose Z_ADC
is under ``level + fraction * (depth - level)`` and that connect to it. A component no deeper than its
surroundings, or one whose redrawn form would be empty, stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hieseg.io.brain import brain_of
from hieseg.io.images import to_xyz_array
from hieseg.io.layout import CaseImages

FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
"""26-connectivity: voxels touching by a corner belong to the same lesion."""
DEPTH_PERCENTILE = 10.0
"""A component's depth: this percentile of Z_ADC inside it (not the minimum, which one noisy voxel decides)."""
REACH_MM = 3.0
"""How far from the component its edge may move outwards (voxels farther stay outside)."""
SHELL_MM = (3.0, 8.0)
"""The shell, in mm from the component, whose brain voxels give the surrounding level: beyond the blur's reach
and still local."""


@dataclass(frozen=True)
class ZadcMap:
    """A case's Z_ADC and brain on its native grid, axes (x, y, z), as the boundary step reads them."""

    zadc: np.ndarray
    brain: np.ndarray
    """Boolean: ADC > 0."""

    @classmethod
    def of_case(cls, case: CaseImages) -> ZadcMap:
        return cls(to_xyz_array(case.zadc).astype(np.float32), brain_of(case.adc).astype(bool))

    @classmethod
    def if_needed(cls, case: CaseImages, fraction: float) -> ZadcMap | None:
        """The case's map when the boundary step runs (``fraction`` above 0); ``None`` spares reading it."""
        return cls.of_case(case) if fraction > 0 else None


def zadc_boundary(mask: np.ndarray, zadc_map: ZadcMap, spacing: tuple[float, float, float],
                  fraction: float) -> np.ndarray:
    """The uint8 mask with each component's edge redrawn at ``fraction`` of the way from the surrounding level to
    the component's depth (0 returns the mask unchanged)."""
    if fraction <= 0 or not mask.any():
        return mask
    labels, _ = ndimage.label(mask, structure=FULL_CONNECTIVITY)
    redrawn = np.zeros(mask.shape, dtype=bool)
    for box, component in _components(labels, spacing):
        redrawn[box] |= _redrawn_component(component, mask[box].astype(bool), zadc_map.zadc[box],
                                           zadc_map.brain[box], spacing, fraction)
    return redrawn.astype(np.uint8)


def _components(labels: np.ndarray, spacing: tuple[float, float, float]) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """Each component as (its bounding box widened by the shell's outer radius, its voxels in that box)."""
    margin = [int(np.ceil(SHELL_MM[1] / step)) + 1 for step in spacing]
    found = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        wide = tuple(slice(max(part.start - pad, 0), min(part.stop + pad, size))
                     for part, pad, size in zip(box, margin, labels.shape))
        found.append((wide, labels[wide] == index))
    return found


def _redrawn_component(component: np.ndarray, mask: np.ndarray, zadc: np.ndarray, brain: np.ndarray,
                       spacing: tuple[float, float, float], fraction: float) -> np.ndarray:
    """One component (boolean, in its box) redrawn; the box's whole mask keeps the shell off other components."""
    distance = ndimage.distance_transform_edt(~component, sampling=spacing)
    shell = (distance > SHELL_MM[0]) & (distance <= SHELL_MM[1]) & brain & ~mask
    depth = float(np.percentile(zadc[component], DEPTH_PERCENTILE))
    level = float(np.median(zadc[shell])) if shell.any() else 0.0
    if depth >= level:
        return component
    below = (distance <= REACH_MM) & brain & (zadc <= level + fraction * (depth - level))
    joined, _ = ndimage.label(below | component, structure=FULL_CONNECTIVITY)
    touching = np.unique(joined[component])
    redrawn = np.isin(joined, touching[touching > 0]) & below
    return redrawn if redrawn.any() else component
