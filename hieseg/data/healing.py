"""Lesion-free copies of labelled cases: what a network marks on a brain of the same source with no lesion.

The challenge's data holds lesion-free cases, and a false lesion on one costs that case's whole Dice and
NSD and the capped MASD. A training release may hold none (family-a-train holds none), so nothing there
shows how often the network marks a lesion-free brain, and post-processing tuned on it has no reason to
ever leave a mask empty. A healed copy answers that from the cases at hand: the lesion, widened by a
margin that takes its faint rim too, is replaced by the level of the tissue around it (a normalised
convolution of the rest of the brain) plus noise as strong as that tissue's own, in both channels; the
label becomes empty. Everything else of the case, its artefacts and confounders included, is kept,
so the copy carries whatever else a network might mistake for a lesion in that source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hieseg.io.brain import brain_mask
from hieseg.io.images import from_xyz_array, to_xyz_array
from hieseg.io.layout import CaseImages

MIN_WEIGHT = 1e-3
"""Below this share of tissue in its Gaussian neighbourhood, a voxel's local level is not trusted at that scale."""
HEALED_SUFFIX = "+healed"
"""Appended to a case id to name its healed copy in logs and ``tuning.json``."""


@dataclass(frozen=True)
class Healing:
    """How a lesion is replaced by the tissue around it."""

    margin_mm: float = 2.0
    """The label is widened by this before it is replaced: the release's Z_ADC is smoothed by 2 mm, so a lesion's
    low values reach about that far past its label."""
    smoothing_mm: float = 4.0
    """Gaussian sigma of the normalised convolution that gives the surrounding tissue's level; doubled (up to
    ``max_doublings`` times) where a large lesion leaves no tissue within reach."""
    max_doublings: int = 4
    shell_mm: float = 8.0
    """The tissue within this of the replaced region sets the noise strength."""
    zadc_noise_mm: float = 2.0
    """Gaussian sigma of the Z_ADC noise, which the release smooths by 2 mm; ADC noise is white."""
    zadc_limit: float = 10.0
    """The release clips Z_ADC at +-10."""


def heal_case(case: CaseImages, seed: int, healing: Healing = Healing()) -> CaseImages:
    """A lesion-free copy of a labelled case, named with :data:`HEALED_SUFFIX`: the lesion region refilled in both
    channels, the label emptied. The brain (ADC > 0) is unchanged: the refilled ADC stays positive inside it.
    A lesion that leaves no brain outside it (widened) cannot be healed: ValueError.
    """
    if case.label is None:
        raise ValueError(f"case {case.files.case_id} has no label to heal")
    adc, zadc = to_xyz_array(case.adc), to_xyz_array(case.zadc)
    label = to_xyz_array(case.label, np.uint8).astype(bool)
    spacing = tuple(float(s) for s in case.adc.GetSpacing())
    brain = brain_mask(adc)
    distance = ndimage.distance_transform_edt(~label, sampling=spacing) if label.any() else np.full(label.shape, np.inf)
    region = (distance <= healing.margin_mm) & brain
    tissue = brain & ~region
    shell = tissue & (distance <= healing.margin_mm + healing.shell_mm)
    if region.any() and not tissue.any():
        raise ValueError(f"case {case.files.case_id}: no brain outside its lesion to refill the lesion from")
    rng = np.random.default_rng(seed)
    healed_adc = adc.copy()
    healed_zadc = zadc.copy()
    if region.any():
        adc_fill = _refill(adc, region, tissue, shell, spacing, healing, 0.0, rng)
        floor = 0.01 * float(np.median(adc[tissue]))
        healed_adc[region] = np.maximum(adc_fill[region], floor)
        zadc_fill = _refill(zadc, region, tissue, shell, spacing, healing, healing.zadc_noise_mm, rng)
        healed_zadc[region] = np.clip(zadc_fill[region], -healing.zadc_limit, healing.zadc_limit)
    empty = sitk.Image(case.label.GetSize(), case.label.GetPixelID())
    empty.CopyInformation(case.label)
    files = dataclasses.replace(case.files, case_id=case.files.case_id + HEALED_SUFFIX)
    return CaseImages(files=files, adc=from_xyz_array(healed_adc, case.adc),
                      zadc=from_xyz_array(healed_zadc, case.zadc), label=empty)


def _refill(values: np.ndarray, region: np.ndarray, tissue: np.ndarray, shell: np.ndarray,
            spacing: tuple[float, ...], healing: Healing, noise_mm: float, rng: np.random.Generator) -> np.ndarray:
    """The tissue's local level everywhere, plus noise of the shell's residual strength."""
    level = _tissue_level(values, region, tissue, spacing, healing)
    residual = values[shell] - level[shell] if shell.any() else values[tissue] - level[tissue]
    noise = rng.standard_normal(values.shape)
    if noise_mm > 0:
        noise = ndimage.gaussian_filter(noise, [noise_mm / s for s in spacing])
        noise /= max(float(noise.std()), 1e-12)
    return level + float(residual.std()) * noise


def _tissue_level(values: np.ndarray, region: np.ndarray, tissue: np.ndarray,
                  spacing: tuple[float, ...], healing: Healing) -> np.ndarray:
    """The normalised convolution of the tissue's values over the tissue and the region, at the smallest
    scale that reaches each voxel; the tissue's median where none does."""
    level = np.full(values.shape, float(np.median(values[tissue])), dtype=np.float64)
    weight_in = tissue.astype(np.float64)
    value_in = np.where(tissue, values, 0.0).astype(np.float64)
    pending = region | tissue
    sigma_mm = healing.smoothing_mm
    for _ in range(healing.max_doublings + 1):
        sigma = [sigma_mm / s for s in spacing]
        weight = ndimage.gaussian_filter(weight_in, sigma)
        reached = pending & (weight > MIN_WEIGHT)
        level[reached] = ndimage.gaussian_filter(value_in, sigma)[reached] / weight[reached]
        pending &= ~reached
        if not pending.any():
            break
        sigma_mm *= 2.0
    return level
