"""Tests of ``hieseg.model.losses``: each loss against hand-computed formulas, the Tversky
alpha/beta convention, compound weighting, monotonic descent toward the label, gradients,
batch pooling and name validation."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from hieseg.config.settings import LOSS_NAMES, LossConfig
from hieseg.model.losses import BOUNDARY_TERM, REGION_TERM, WeightedSum, build_loss

SMOOTH = 1e-5  # MONAI's default smooth_nr = smooth_dr, kept by hieseg.losses
CONFIDENT = 20.0  # |logit| at which sigmoid is 0 or 1 to float precision


def config(name: str, **overrides: float) -> LossConfig:
    return dataclasses.replace(LossConfig(name=name), **overrides)


def cube_label(size: int, lo: int, hi: int) -> torch.Tensor:
    """(1, 1, size, size, size) label with the cube [lo, hi)^3 set to 1."""
    label = torch.zeros(1, 1, size, size, size, dtype=torch.float64)
    label[..., lo:hi, lo:hi, lo:hi] = 1.0
    return label


def ball_label(size: int, radius: float) -> torch.Tensor:
    """(1, 1, size, size, size) label of a ball centred in the volume."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3, indexing="ij"))
    centre = (size - 1) / 2
    inside = ((grid - centre) ** 2).sum(0) <= radius**2
    return inside.to(torch.float64)[None, None]


def fixed_logits(label: torch.Tensor) -> torch.Tensor:
    """Noisy logits that agree with the label on most voxels but not all."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(label.shape, generator=generator, dtype=torch.float64)
    return 1.5 * (2 * label - 1) + 1.5 * noise


# Hand formulas, in float64, pooled over the whole (batch) tensor as POOL_BATCH asks.


def hand_dice(logits: torch.Tensor, label: torch.Tensor) -> float:
    p, g = torch.sigmoid(logits), label
    return float(1 - (2 * (p * g).sum() + SMOOTH) / (p.sum() + g.sum() + SMOOTH))


def hand_tversky(logits: torch.Tensor, label: torch.Tensor, alpha: float, beta: float) -> float:
    p, g = torch.sigmoid(logits), label
    tp, fp, fn = (p * g).sum(), (p * (1 - g)).sum(), ((1 - p) * g).sum()
    return float(1 - (tp + SMOOTH) / (tp + alpha * fp + beta * fn + SMOOTH))


def hand_focal(logits: torch.Tensor, label: torch.Tensor, gamma: float) -> float:
    """MONAI's sigmoid focal loss without alpha: mean of -(1 - pt)^gamma * log(pt)."""
    p = torch.sigmoid(logits)
    pt = torch.where(label > 0.5, p, 1 - p)
    return float((-((1 - pt) ** gamma) * torch.log(pt)).mean())


def distance_field(mask: np.ndarray) -> np.ndarray:
    """Distance to the boundary inside plus outside the mask; zero for an empty or full mask."""
    if not mask.any() or mask.all():
        return np.zeros(mask.shape)
    return distance_transform_edt(mask) + distance_transform_edt(~mask)


def hand_hausdorffdt(logits: torch.Tensor, label: torch.Tensor, alpha: float) -> float:
    """Mean over samples of mean((p - g)^2 * (d_pred^alpha + d_label^alpha))."""
    p = torch.sigmoid(logits).numpy()
    g = label.numpy()
    per_sample = []
    for b in range(p.shape[0]):
        distance = distance_field(p[b] > 0.5) ** alpha + distance_field(g[b] > 0.5) ** alpha
        per_sample.append(((p[b] - g[b]) ** 2 * distance).mean())
    return float(np.mean(per_sample))


def evaluate(name: str, logits: torch.Tensor, label: torch.Tensor, **overrides: float) -> float:
    return float(build_loss(config(name, **overrides))(logits.float(), label.float()))


def hand_loss(name: str, logits: torch.Tensor, label: torch.Tensor, cfg: LossConfig) -> float:
    dicefocal = hand_dice(logits, label) + hand_focal(logits, label, cfg.focal_gamma)
    tversky = hand_tversky(logits, label, cfg.tversky_alpha, cfg.tversky_beta)
    boundary = math.log1p(hand_hausdorffdt(logits, label, cfg.hausdorff_alpha))
    return {
        "dice": hand_dice(logits, label),
        "dicefocal": dicefocal,
        "tversky": tversky,
        "hausdorffdt": hand_hausdorffdt(logits, label, cfg.hausdorff_alpha),
        "dicefocal_hausdorffdt": cfg.region_weight * dicefocal + cfg.boundary_weight * boundary,
        "tversky_hausdorffdt": cfg.region_weight * tversky + cfg.boundary_weight * boundary,
    }[name]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_matches_hand_formula(name: str) -> None:
    label = cube_label(4, 1, 3)
    logits = fixed_logits(label)
    thresholded = torch.sigmoid(logits) > 0.5
    assert thresholded.any() and not thresholded.all() and not torch.equal(thresholded.double(), label)
    expected = hand_loss(name, logits, label, LossConfig(name=name))
    assert evaluate(name, logits, label) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_focal_part_uses_configured_gamma() -> None:
    label = cube_label(4, 1, 3)
    logits = fixed_logits(label)
    value = evaluate("dicefocal", logits, label, focal_gamma=0.5)
    assert value == pytest.approx(hand_dice(logits, label) + hand_focal(logits, label, 0.5), rel=1e-5)


def test_hausdorffdt_uses_configured_alpha() -> None:
    label = cube_label(4, 1, 3)
    logits = fixed_logits(label)
    value = evaluate("hausdorffdt", logits, label, hausdorff_alpha=1.0)
    assert value == pytest.approx(hand_hausdorffdt(logits, label, 1.0), rel=1e-5)
    assert value != pytest.approx(hand_hausdorffdt(logits, label, 2.0), rel=1e-3)


def test_tversky_alpha_weighs_false_positives_beta_false_negatives() -> None:
    label = cube_label(5, 1, 4)
    flipped = 4
    fp_only = label.clone().flatten()
    fp_only[torch.nonzero(fp_only == 0)[:flipped]] = 1.0
    fn_only = label.clone().flatten()
    fn_only[torch.nonzero(fn_only == 1)[:flipped]] = 0.0

    def loss_of(prediction: torch.Tensor) -> float:
        logits = CONFIDENT * (2 * prediction.view_as(label) - 1)
        return evaluate("tversky", logits, label, tversky_alpha=0.3, tversky_beta=0.7)

    tp = float(label.sum())
    assert loss_of(fp_only) == pytest.approx(0.3 * flipped / (tp + 0.3 * flipped), rel=1e-4)
    assert loss_of(fn_only) == pytest.approx(0.7 * flipped / (tp - flipped + 0.7 * flipped), rel=1e-4)
    assert loss_of(fn_only) > 2 * loss_of(fp_only)


@pytest.mark.parametrize(
    ("name", "region"), [("dicefocal_hausdorffdt", "dicefocal"), ("tversky_hausdorffdt", "tversky")]
)
def test_compound_is_weighted_region_plus_log_hausdorffdt(name: str, region: str) -> None:
    label = cube_label(4, 1, 3)
    logits = fixed_logits(label)
    log_hd = math.log1p(evaluate("hausdorffdt", logits, label))
    for region_weight, boundary_weight in [(0.9, 0.1), (0.5, 0.5), (0.2, 1.7)]:
        value = evaluate(name, logits, label, region_weight=region_weight, boundary_weight=boundary_weight)
        expected = region_weight * evaluate(region, logits, label) + boundary_weight * log_hd
        assert value == pytest.approx(expected, abs=1e-6)

    compound = build_loss(config(name, region_weight=0.25, boundary_weight=2.0))
    assert isinstance(compound, WeightedSum)
    assert compound.weights == {REGION_TERM: 0.25, BOUNDARY_TERM: 2.0}
    parts = compound.components(logits.float(), label.float())
    assert float(parts[BOUNDARY_TERM]) == pytest.approx(log_hd, abs=1e-6)
    assert float(parts[REGION_TERM]) == pytest.approx(evaluate(region, logits, label), abs=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_decreases_toward_label(name: str) -> None:
    label = ball_label(8, 2.5)
    right = 8.0 * (2 * label - 1)
    # Six steps from the inverted to the correct prediction, never at logit 0 where the
    # thresholded prediction (and thus the Hausdorff distance field) would vanish.
    steps = [evaluate(name, -right + t * 2 * right, label) for t in np.linspace(0, 1, 6)]
    assert all(later < earlier for earlier, later in zip(steps, steps[1:])), steps

    perfect = evaluate(name, CONFIDENT * (2 * label - 1), label)
    assert 0.0 <= perfect < 1e-3
    assert perfect <= min(steps)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_flow_without_warnings(name: str) -> None:
    label = ball_label(6, 1.8).repeat(2, 1, 1, 1, 1).float()
    logits = fixed_logits(label).float().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. MONAI's single-channel include_background warning
        build_loss(LossConfig(name=name))(logits, label).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_region_losses_pool_the_batch() -> None:
    """An empty-label patch is scored against the batch's lesion, not alone (POOL_BATCH)."""
    label = torch.cat([cube_label(4, 1, 3), torch.zeros(1, 1, 4, 4, 4, dtype=torch.float64)])
    logits = fixed_logits(label)
    assert evaluate("dice", logits, label) == pytest.approx(hand_dice(logits, label), rel=1e-5)
    cfg = LossConfig()
    pooled_tversky = hand_tversky(logits, label, cfg.tversky_alpha, cfg.tversky_beta)
    assert evaluate("tversky", logits, label) == pytest.approx(pooled_tversky, rel=1e-5)
    per_sample_hd = hand_hausdorffdt(logits, label, cfg.hausdorff_alpha)
    assert evaluate("hausdorffdt", logits, label) == pytest.approx(per_sample_hd, rel=1e-5)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as excinfo:
        build_loss(LossConfig(name="bce"))
    message = str(excinfo.value)
    assert "bce" in message
    assert all(name in message for name in LOSS_NAMES)


def test_loss_names_in_study_order() -> None:
    assert LOSS_NAMES == (
        "dice",
        "dicefocal",
        "tversky",
        "hausdorffdt",
        "dicefocal_hausdorffdt",
        "tversky_hausdorffdt",
    )


@pytest.mark.parametrize("name", ["tversky", "tversky_hausdorffdt"])
def test_ce_weight_adds_voxelwise_cross_entropy(name: str) -> None:
    label = cube_label(4, 1, 3)
    logits = fixed_logits(label)
    study = evaluate(name, logits, label)
    cross_entropy = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, label))
    assert cross_entropy > 0.01
    assert evaluate(name, logits, label, ce_weight=0.0) == pytest.approx(study, abs=1e-9)
    assert evaluate(name, logits, label, ce_weight=1.0) == pytest.approx(study + cross_entropy, rel=1e-5)
    assert evaluate(name, logits, label, ce_weight=2.5) == pytest.approx(study + 2.5 * cross_entropy, rel=1e-5)


def test_ce_term_rewards_a_small_lesion_the_pooled_ratio_hardly_sees() -> None:
    """A missed punctate lesion beside a found large one: cross-entropy changes by far more than Tversky."""
    label = torch.zeros(1, 1, 16, 16, 8, dtype=torch.float64)
    label[..., 2:10, 2:10, 2:6] = 1.0
    label[..., 13, 13, 6] = 1.0
    found_both = CONFIDENT * (2 * label - 1)
    missed_small = found_both.clone()
    missed_small[..., 13, 13, 6] = -CONFIDENT
    tversky_gain = evaluate("tversky", missed_small, label) - evaluate("tversky", found_both, label)
    with_ce_gain = (evaluate("tversky", missed_small, label, ce_weight=1.0)
                    - evaluate("tversky", found_both, label, ce_weight=1.0))
    assert with_ce_gain > tversky_gain
