"""Physical checks of a case's intensities: ADC in 10^-6 mm^2/s of a skull-stripped brain, Z_ADC clipped to +-10.

The network was trained on maps in these units and ranges; a map in other units, one whose background
is noise instead of 0, or one whose voxels are garbage would give a confident, wrong mask. So each is an
:class:`~hieseg.errors.ImageError` naming the file, with the limits below, each far from every
real-looking case measured (test/input, the 24 foreign phantoms, the 40 family-a training cases, every
profile of the generator) and far from its refusal's physical meaning. A handful of impossible ADC voxels
(a failed fit) is only a warning: the normalisation clips them (``hieseg.data.transforms.adc_fence``).
NaN and infinite voxels are refused when the file is read (:func:`hieseg.io.images.read_image`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hieseg.errors import ImageError

LOG = logging.getLogger(__name__)
ADC_MEDIAN_RANGE = (100.0, 10_000.0)
"""Plausible median of a brain's ADC in 10^-6 mm^2/s: neonatal tissue lies at 1,000-1,800 and free water at
~3,000, so a median outside 100-10,000 (measured: 1,207-1,619) is another unit (mm^2/s gives ~0.0015,
10^-3 mm^2/s ~1.5, 10^-9 m^2/s as 10^-12 ~1,500,000) or another map, not a brain."""
ADC_IMPOSSIBLE = 50_000.0
"""|ADC| in 10^-6 mm^2/s beyond any tissue: 16 times free water at body temperature (~3,000), 11 times the
highest voxel measured (4,572); such a voxel is a failed fit or corrupt data."""
ADC_IMPOSSIBLE_SHARE = 0.01
"""Share of the brain's voxel count that may be impossible (warned and clipped): the clipping fence rests on
the brain's 1st and 99th percentiles, which more than 1 % of wild voxels would move, and a map that broken is
damaged or mis-scaled, not noisy."""
BRAIN_FOV_SHARE = 0.9
"""Largest share of the field of view the brain (ADC > 0) may fill: a skull-stripped neonatal brain fills 2-12 %
of the release's images (measured), so a brain of over 90 % means the background is not 0 (noise, an unstripped
map) and the "brain" is the whole box."""
ZADC_LIMIT = 10.0
"""The release clips Z_ADC to +-10 (its file names say ``clipped10``)."""
ZADC_LOWEST_OF_A_MAP = -2.0
"""A Z_ADC map goes below this somewhere (measured lowest values -5.7 to -10: lesions and normal variation), an
ADC in any unit does not (tissue is positive, backgrounds are 0 or -1): told apart when an ADC looks wrong."""
ZADC_ROUNDING = 1e-3
"""Slack on ``ZADC_LIMIT`` for float rounding of a map that was resampled or converted after its clipping."""


def check_intensities(adc: np.ndarray, adc_path: Path, zadc: np.ndarray, zadc_path: Path) -> None:
    """Refuse an ADC or Z_ADC array (any axis order, same shape) that breaks the rules above; warn about a few
    impossible ADC voxels. The ADC must have a brain (ADC > 0): :func:`hieseg.io.brain.check_brain` sees to it."""
    brain = adc > 0
    brain_voxels = int(brain.sum())
    share = brain_voxels / adc.size
    if share > BRAIN_FOV_SHARE:
        raise ImageError(f"{adc_path}: the brain (ADC > 0) fills {share:.0%} of the image, over the "
                         f"{BRAIN_FOV_SHARE:.0%} a skull-stripped brain can; the background must be 0 or below "
                         f"(lowest value {float(adc.min()):g}): is the map skull-stripped?")
    _check_adc_scale(adc, adc_path, brain)
    _check_impossible(adc, adc_path, brain_voxels)
    _check_zadc_range(zadc, zadc_path)


def _check_adc_scale(adc: np.ndarray, adc_path: Path, brain: np.ndarray) -> None:
    """Refuse an ADC whose brain median is outside ``ADC_MEDIAN_RANGE``: wrong units, or a Z_ADC in its place."""
    median = float(np.median(adc[brain]))
    low, high = ADC_MEDIAN_RANGE
    if not low <= median <= high:
        swapped = " (its values lie within +-10 and go below 0 in the brain's range, like a Z_ADC: are ADC and " \
            "Z_ADC swapped?)" if _looks_like_zadc(adc) else ""
        raise ImageError(f"{adc_path}: the brain's median ADC is {median:.4g}, outside the {low:,.0f}-{high:,.0f} of "
                         f"brain tissue in 10^-6 mm^2/s; wrong units?{swapped}")


def _looks_like_zadc(adc: np.ndarray) -> bool:
    """Whether an "ADC" array reads like a Z_ADC: within +-``ZADC_LIMIT`` and below ``ZADC_LOWEST_OF_A_MAP``
    somewhere, which no ADC in other units is (its background is 0 or -1, its tissue positive)."""
    return float(np.abs(adc).max()) <= ZADC_LIMIT + ZADC_ROUNDING and float(adc.min()) < ZADC_LOWEST_OF_A_MAP


def _check_impossible(adc: np.ndarray, adc_path: Path, brain_voxels: int) -> None:
    """Refuse an ADC with more than ``ADC_IMPOSSIBLE_SHARE`` impossible voxels; warn about fewer."""
    impossible = int((np.abs(adc) > ADC_IMPOSSIBLE).sum())
    if not impossible:
        return
    extreme = float(adc.flat[np.argmax(np.abs(adc))])
    if impossible > ADC_IMPOSSIBLE_SHARE * brain_voxels:
        raise ImageError(f"{adc_path}: {impossible} voxel(s) beyond +-{ADC_IMPOSSIBLE:,.0f} x 10^-6 mm^2/s (e.g. "
                         f"{extreme:g}), impossible for tissue, over {ADC_IMPOSSIBLE_SHARE:.0%} of the "
                         f"{brain_voxels} brain voxels: the map is damaged or in other units")
    LOG.warning("%s: %d voxel(s) beyond +-%s x 10^-6 mm^2/s (e.g. %g), impossible for tissue; those in the brain "
                "are clipped before the normalisation", adc_path, impossible, f"{ADC_IMPOSSIBLE:,.0f}", extreme)


def _check_zadc_range(zadc: np.ndarray, zadc_path: Path) -> None:
    """Refuse a Z_ADC outside the release's +-``ZADC_LIMIT``: not a clipped z-score map (often the ADC itself)."""
    low, high = float(zadc.min()), float(zadc.max())
    if max(-low, high) > ZADC_LIMIT + ZADC_ROUNDING:
        raise ImageError(f"{zadc_path}: values from {low:.4g} to {high:.4g}, outside the +-{ZADC_LIMIT:g} a Z_ADC of "
                         "the release is clipped to: not a Z_ADC map (are ADC and Z_ADC swapped?)")
