"""Model-free baselines: what thresholding the Z_ADC map alone achieves.

A model is only worth its weights if it beats these. ``zadc_lt2`` is the organisers'
baseline container (lesion where Z_ADC < -2, strictly); ``zadc_lt2_clean10`` removes its
face-connected specks of fewer than 10 voxels, the cheapest clean-up of its noise.

:func:`write_baselines` writes ``<out>/<baseline>/<case>.mha`` for a release root or a container
input root: uint8 0/1 masks with exactly Z_ADC's geometry, which ``python -m hieseg.evaluate``
reads directly. The command line is :mod:`hieseg.cli.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from hieseg.evaluation.lesions import FACE_CONNECTIVITY
from hieseg.io.images import (
    MHA_SUFFIX,
    from_xyz_array,
    to_xyz_array,
    write_image_atomic,
)
from hieseg.io.layout import (
    CaseImages,
    container_interface,
    discover_cases,
    load_case,
    read_input_case,
)

ZADC_THRESHOLD = -2.0
"""The organisers' baseline: a voxel is lesion when its Z_ADC is strictly below this."""
MIN_COMPONENT_VOXELS = 10
"""Components with fewer voxels are removed by the cleaned baseline."""



def zadc_threshold(zadc: np.ndarray) -> np.ndarray:
    """Z_ADC < -2 (strict) as a uint8 0/1 mask."""
    return (np.asarray(zadc) < ZADC_THRESHOLD).astype(np.uint8)


def cleaned_zadc_threshold(zadc: np.ndarray, min_voxels: int = MIN_COMPONENT_VOXELS) -> np.ndarray:
    """:func:`zadc_threshold` without its face-connected components of fewer than ``min_voxels`` voxels."""
    mask = zadc_threshold(zadc)
    labels, count = ndimage.label(mask, structure=FACE_CONNECTIVITY)
    keep = np.bincount(labels.ravel(), minlength=count + 1) >= min_voxels
    keep[0] = False
    return keep[labels].astype(np.uint8)


@dataclass(frozen=True)
class Baseline:
    """A named baseline: a function from a Z_ADC array to a uint8 mask (same axes), and what it is."""

    compute: Callable[[np.ndarray], np.ndarray]
    description: str


BASELINES: dict[str, Baseline] = {
    "zadc_lt2": Baseline(zadc_threshold, "Z_ADC < -2, the organisers' baseline container"),
    "zadc_lt2_clean10": Baseline(
        cleaned_zadc_threshold,
        f"Z_ADC < -2 without face-connected components under {MIN_COMPONENT_VOXELS} voxels",
    ),
}


def baseline_mask_image(name: str, zadc: sitk.Image) -> sitk.Image:
    """Baseline ``name``'s mask of a Z_ADC image, with exactly its geometry."""
    return from_xyz_array(BASELINES[name].compute(to_xyz_array(zadc)), zadc)


def input_cases(data: Path) -> tuple[int, Iterator[CaseImages]]:
    """The cases of a release root or a container input root: their number, then each case, read in turn."""
    data, interface = Path(data), container_interface()
    if (data / interface.adc_dir).is_dir() or (data / interface.zadc_dir).is_dir():
        return 1, iter([read_input_case(data)])
    files = discover_cases(data, require_labels=False)
    return len(files), (load_case(f) for f in files)


def write_baselines(data: Path, out: Path, *, progress: bool = True) -> int:
    """Write every baseline's mask of every case to ``<out>/<baseline>/<case>.mha``; return the case count."""
    count, cases = input_cases(data)
    for case in tqdm(cases, total=count, desc="baselines", unit="case", disable=None if progress else True):
        for name in BASELINES:
            mask = baseline_mask_image(name, case.zadc)
            write_image_atomic(mask, Path(out) / name / f"{case.files.case_id}{MHA_SUFFIX}")
    return count
