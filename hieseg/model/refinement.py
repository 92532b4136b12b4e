"""An optional second stage: the networks' lesion probability refined with local ADC and Z_ADC features.

The first-placed BONBID-HIE team refined their network's probability with a classifier on small
in-plane neighbourhoods of (Z_ADC, ADC, probability). This is that stage as a voxel-wise logistic
regression: a few numbers, so it is saved as JSON beside the weights (``refinement.json``) and
loaded without unpickling anything from a model folder. Tuning fits it on the validation cases and
keeps it only when, cross-fitted there, it beats the plain probability (see
:mod:`hieseg.training.tuning`).

Features per brain voxel (ADC > 0), each standardised by the fitted mean and scale:
the probability's logit, Z_ADC, ADC z-scored over the case's brain, and over an in-plane square of
about ``neighbourhood_mm`` per side (one slice, since slices are thick) the means of Z_ADC, ADC and
the probability and the minimum of Z_ADC.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from hieseg.config.validation import shown
from hieseg.errors import ModelError
from hieseg.io.images import write_atomic
from hieseg.io.jsonfile import read_weights_json

REFINEMENT_FILENAME = "refinement.json"
FEATURE_NAMES: tuple[str, ...] = (
    "probability_logit",
    "zadc",
    "adc_brain_z",
    "local_mean_zadc",
    "local_mean_adc_brain_z",
    "local_mean_probability",
    "local_min_zadc",
)
PROBABILITY_CLIP = 1e-4
"""Probabilities are clipped to [1e-4, 1 - 1e-4] before the logit, so a saturated network stays finite."""


@dataclass(frozen=True)
class RefinementExample:
    """One case's network probability and images as (x, y, z) arrays on its native grid, with its truth."""

    probability: np.ndarray
    adc: np.ndarray
    zadc: np.ndarray
    spacing: tuple[float, float, float]
    label: np.ndarray


@dataclass(frozen=True)
class Refiner:
    """A fitted logistic regression over :data:`FEATURE_NAMES`."""

    neighbourhood_mm: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def refine(self, probability: np.ndarray, adc: np.ndarray, zadc: np.ndarray,
               spacing: Sequence[float]) -> np.ndarray:
        """The refined lesion probability, float32, 0 outside the brain."""
        features, brain = voxel_features(probability, adc, zadc, spacing, self.neighbourhood_mm)
        refined = np.zeros(probability.shape, dtype=np.float32)
        refined[brain] = self._predict(features)
        return refined

    def _predict(self, features: np.ndarray) -> np.ndarray:
        standard = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(standard @ np.asarray(self.weights) + self.bias)

    def to_dict(self) -> dict[str, object]:
        return {
            "method": "logistic regression on local ADC and Z_ADC features",
            "features": list(FEATURE_NAMES),
            "neighbourhood_mm": self.neighbourhood_mm,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "weights": list(self.weights),
            "bias": self.bias,
        }

    @classmethod
    def from_dict(cls, data: object, source: Path) -> Refiner:
        """The refiner saved in ``data``; anything else is a :class:`ModelError` naming ``source``."""
        if not isinstance(data, dict):
            raise ModelError(f"{source}: expected an object with the refinement's coefficients")
        if data.get("features") != list(FEATURE_NAMES):
            raise ModelError(f"{source}: features {shown(data.get('features'))} differ from this version's "
                             f"{list(FEATURE_NAMES)}; tune the weights folder again")
        vectors = {name: _numbers(data.get(name), source, name, len(FEATURE_NAMES))
                   for name in ("mean", "scale", "weights")}
        if any(value <= 0 for value in vectors["scale"]):
            raise ModelError(f"{source}: 'scale' must be positive")
        (neighbourhood,) = _numbers([data.get("neighbourhood_mm")], source, "neighbourhood_mm", 1)
        (bias,) = _numbers([data.get("bias")], source, "bias", 1)
        if neighbourhood <= 0:
            raise ModelError(f"{source}: 'neighbourhood_mm' must be positive")
        return cls(neighbourhood_mm=neighbourhood, bias=bias, **vectors)


def voxel_features(probability: np.ndarray, adc: np.ndarray, zadc: np.ndarray, spacing: Sequence[float],
                   neighbourhood_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The (brain voxels, features) matrix of one case, and the brain mask whose voxels are its rows."""
    brain = adc > 0
    if not brain.any():
        return np.zeros((0, len(FEATURE_NAMES))), brain
    values = adc[brain].astype(np.float64)
    adc_z = np.where(brain, (adc - values.mean()) / max(float(values.std()), 1e-6), 0.0)
    clipped = np.clip(probability.astype(np.float64), PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    size = neighbourhood_voxels(spacing, neighbourhood_mm)
    share = ndimage.uniform_filter(brain.astype(np.float64), size, mode="constant")

    def local_mean(image: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(np.where(brain, image, 0.0), size, mode="constant") / np.maximum(share, 1e-9)

    local_min_z = ndimage.minimum_filter(np.where(brain, zadc, np.inf), size, mode="nearest")
    columns = (np.log(clipped / (1.0 - clipped)), zadc, adc_z, local_mean(zadc), local_mean(adc_z),
               local_mean(clipped), local_min_z)
    return np.stack([np.asarray(column, dtype=np.float64)[brain] for column in columns], axis=1), brain


def neighbourhood_voxels(spacing: Sequence[float], neighbourhood_mm: float) -> tuple[int, int, int]:
    """The in-plane square of about ``neighbourhood_mm`` per side in voxels (odd, at least 1), one slice thick."""
    return (*(max(1, round(neighbourhood_mm / float(step))) // 2 * 2 + 1 for step in spacing[:2]), 1)


def fit_refiner(examples: Sequence[RefinementExample], neighbourhood_mm: float, *, ridge: float = 1.0,
                negative_fraction: float = 0.2, seed: int = 0) -> Refiner:
    """Fit the refiner on every lesion voxel and a random share of the other brain voxels.

    The sampled background is weighted by the inverse of its share, so the fitted probability
    stays calibrated to the full brain; the L2 penalty ``ridge`` keeps a few cases from producing
    extreme coefficients. Fitted by Newton's method, which converges in a few steps here.
    """
    rng = np.random.default_rng(seed)
    rows, targets, weights = [], [], []
    for example in examples:
        features, brain = voxel_features(example.probability, example.adc, example.zadc, example.spacing,
                                         neighbourhood_mm)
        lesion = example.label[brain] > 0
        kept = lesion | (rng.random(lesion.shape) < negative_fraction)
        rows.append(features[kept])
        targets.append(lesion[kept].astype(np.float64))
        weights.append(np.where(lesion[kept], 1.0, 1.0 / negative_fraction))
    x, y, w = np.concatenate(rows), np.concatenate(targets), np.concatenate(weights)
    if not y.any() or y.all():
        raise ValueError("the refinement needs lesion and background voxels among its cases")
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    design = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    coefficients = _newton_logistic(design, y, w, ridge)
    return Refiner(neighbourhood_mm=float(neighbourhood_mm), mean=tuple(map(float, mean)),
                   scale=tuple(map(float, scale)), weights=tuple(map(float, coefficients[:-1])),
                   bias=float(coefficients[-1]))


def save_refiner(refiner: Refiner, model_dir: Path) -> Path:
    """Write ``refinement.json`` into ``model_dir`` atomically; its path is returned."""
    path = Path(model_dir) / REFINEMENT_FILENAME
    text = json.dumps(refiner.to_dict(), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda target: target.write_text(text))
    return path


def load_refiner(model_dir: Path) -> Refiner | None:
    """The refiner saved in ``model_dir``, or None when the folder has none."""
    path = Path(model_dir) / REFINEMENT_FILENAME
    if not path.exists():
        return None
    data = read_weights_json(path, "the refinement's few coefficients")
    return Refiner.from_dict(data, path)


def require_refiner(refiner: Refiner | None, model_dir: Path) -> Refiner:
    """``refiner``, or the :class:`ModelError` for a weights folder asked to refine without its ``refinement.json``."""
    if refiner is None:
        raise ModelError(f"inference.refine is on but {Path(model_dir) / REFINEMENT_FILENAME} is missing: copy it "
                         "with the weights, or turn refinement off (--no-refine, or refine false in config.json)")
    return refiner


def _newton_logistic(design: np.ndarray, target: np.ndarray, weight: np.ndarray, ridge: float,
                     steps: int = 50) -> np.ndarray:
    penalty = np.full(design.shape[1], ridge)
    penalty[-1] = 0.0
    coefficients = np.zeros(design.shape[1])
    for _ in range(steps):
        fitted = _sigmoid(design @ coefficients)
        gradient = design.T @ (weight * (fitted - target)) + penalty * coefficients
        hessian = (design * (weight * fitted * (1.0 - fitted))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        coefficients -= step
        if np.abs(step).max() < 1e-8:
            break
    return coefficients


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))


def _numbers(value: object, source: Path, name: str, length: int) -> tuple[float, ...]:
    if (not isinstance(value, list) or len(value) != length
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ModelError(f"{source}: {name!r} must be {length} finite number(s)")
    return tuple(float(v) for v in value)
