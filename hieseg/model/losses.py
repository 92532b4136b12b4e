"""The six training losses compared in "Multimodal HIE Lesion Segmentation in Neonates:
A Comparative Study of Loss Functions" (arXiv 2502.09148), built from MONAI's losses.

The network emits one channel of logits, shape (B, 1, X, Y, Z), and labels are float 0/1
of the same shape. Every loss therefore takes raw logits (``sigmoid=True``) and keeps
its only channel (``include_background=True``). MONAI 1.6 ignores
``include_background=False`` for a single channel with a warning on every call, and
``HausdorffDTLoss`` defaults to ``False``, so it is set explicitly to keep the maths
unchanged and the training log quiet.

Tversky convention (checked in ``monai/losses/tversky.py``): MONAI's ``alpha`` multiplies
the false positives and ``beta`` the false negatives,
``1 - (TP + s) / (TP + alpha*FP + beta*FN + s)``, which matches ``LossConfig``: the
default alpha=0.3, beta=0.7 penalises missed lesion more than over-segmentation.

Batch pooling: ``POOL_BATCH`` sums TP/FP/FN over the whole batch before the Dice and
Tversky ratios (nnU-Net's "batch Dice"). Training draws many patches without lesion;
per sample, such a patch scores ~1 whatever the prediction (MONAI's 1e-5 smoothing is
swamped by the sigmoid summed over a patch's ~1e5 voxels) and its gradient vanishes, so
its false positives go unpunished and a constant dominates the loss. Pooled, the empty
patch's false positives count against the batch's lesion voxels and are penalised, and
the ratio stays informative whenever one patch in the batch has lesion. The Hausdorff-DT term is a per-voxel mean, which pooling does not change.

Cross-entropy (``loss.ce_weight``): any of the six may have a voxel-wise binary cross-entropy added, as
nnU-Net adds CE to its batch Dice. Pooled ratios weigh a lesion by its voxels, so a punctate lesion beside a
large one hardly changes them; cross-entropy gives each voxel its own gradient wherever it is.

Deep supervision (:func:`build_training_loss`), as nnU-Net does it: a network that returns
logits at several resolutions (a DynUNet, ``hieseg.model.network``) is scored by the same loss at each
of them, against the labels downsampled to that output's size by nearest-neighbour
('nearest-exact', as nnU-Net v2's ``DownsampleSegForDSTransform``), with weights 1/2^i from the
full resolution down, normalised to sum 1. MONAI's :class:`DeepSupervisionLoss` does exactly
this when given the weights. Which outputs exist, and so nnU-Net's dropping of the coarsest
one, is decided by the network's configuration (``dynunet.deep_supervision_heads``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.losses import (
    DeepSupervisionLoss,
    DiceFocalLoss,
    DiceLoss,
    HausdorffDTLoss,
    LogHausdorffDTLoss,
    TverskyLoss,
)
from torch import nn

from hieseg.config.settings import LOSS_NAMES, LossConfig

POOL_BATCH: bool = True
"""Compute the Dice/Tversky ratios over the pooled batch rather than per sample."""

REGION_TERM = "region"
BOUNDARY_TERM = "boundary"
STUDY_TERM = "study"
CE_TERM = "cross_entropy"


class WeightedSum(nn.Module):
    """Weighted sum of named loss terms, kept apart so each can be inspected or logged."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        if set(terms) != set(weights):
            raise ValueError(f"terms {sorted(terms)} and weights {sorted(weights)} differ")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def components(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each term's unweighted value."""
        return {name: term(input, target) for name, term in self.terms.items()}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=input.dtype, device=input.device)
        for name, value in self.components(input, target).items():
            total = total + self.weights[name] * value
        return total


def _dice(config: LossConfig) -> nn.Module:
    return DiceLoss(sigmoid=True, include_background=True, batch=POOL_BATCH)


def _dicefocal(config: LossConfig) -> nn.Module:
    return DiceFocalLoss(
        sigmoid=True, include_background=True, batch=POOL_BATCH, gamma=config.focal_gamma
    )


def _tversky(config: LossConfig) -> nn.Module:
    return TverskyLoss(
        sigmoid=True,
        include_background=True,
        batch=POOL_BATCH,
        alpha=config.tversky_alpha,
        beta=config.tversky_beta,
    )


def _hausdorffdt(config: LossConfig) -> nn.Module:
    return HausdorffDTLoss(
        alpha=config.hausdorff_alpha, sigmoid=True, include_background=True, batch=POOL_BATCH
    )


def _log_hausdorffdt(config: LossConfig) -> nn.Module:
    """log(1 + HausdorffDT), the boundary term of the compound losses."""
    return LogHausdorffDTLoss(
        alpha=config.hausdorff_alpha, sigmoid=True, include_background=True, batch=POOL_BATCH
    )


def _with_boundary(region: Callable[[LossConfig], nn.Module]) -> Callable[[LossConfig], WeightedSum]:
    """Builder of region_weight * region + boundary_weight * log(1 + HausdorffDT)."""

    def build(config: LossConfig) -> WeightedSum:
        return WeightedSum(
            {REGION_TERM: region(config), BOUNDARY_TERM: _log_hausdorffdt(config)},
            {REGION_TERM: config.region_weight, BOUNDARY_TERM: config.boundary_weight},
        )

    return build


_BUILDERS: dict[str, Callable[[LossConfig], nn.Module]] = {
    "dice": _dice,
    "dicefocal": _dicefocal,
    "tversky": _tversky,
    "hausdorffdt": _hausdorffdt,
    "dicefocal_hausdorffdt": _with_boundary(_dicefocal),
    "tversky_hausdorffdt": _with_boundary(_tversky),
}

if tuple(_BUILDERS) != LOSS_NAMES:
    raise ImportError(f"hieseg.model.losses builds {tuple(_BUILDERS)} but hieseg.config.settings names {LOSS_NAMES}")


def build_loss(config: LossConfig) -> nn.Module:
    """The loss named by ``config.name`` (checked by the config), taking logits and 0/1 labels of shape (B, 1, X, Y, Z),
    plus ``config.ce_weight`` times the voxel-wise binary cross-entropy when that weight is not 0."""
    study = _BUILDERS[config.name](config)
    if config.ce_weight == 0:
        return study
    return WeightedSum({STUDY_TERM: study, CE_TERM: nn.BCEWithLogitsLoss()}, {STUDY_TERM: 1.0, CE_TERM: config.ce_weight})


class DeepSupervisedLoss(DeepSupervisionLoss):
    """MONAI's deep-supervision wrapper with fixed weights, refusing a list of outputs of another length.

    MONAI's falls back to its own weights when a network returns more outputs than weights
    were given; here that mismatch is a bug, so it is an error.
    """

    def __init__(self, loss: nn.Module, weights: list[float]) -> None:
        super().__init__(loss, weights=weights)

    def forward(self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        outputs = len(input) if isinstance(input, (list, tuple)) else 1
        if outputs != len(self.weights):
            raise ValueError(f"the network returned {outputs} output(s), the loss weights {len(self.weights)}")
        return super().forward(input, target)


def deep_supervision_weights(outputs: int) -> list[float]:
    """nnU-Net's weights of ``outputs`` supervised outputs, full resolution first: 1/2^i, normalised to sum 1."""
    weights = [0.5**level for level in range(outputs)]
    return [weight / sum(weights) for weight in weights]


def build_training_loss(config: LossConfig, outputs: int = 1) -> DeepSupervisedLoss:
    """The loss of ``config`` for a network that returns ``outputs`` logit tensors while training.

    One output (a tensor) is scored exactly as :func:`build_loss` scores it; several (a list,
    full resolution first) are scored each against the labels brought to its size, and summed
    with :func:`deep_supervision_weights`. Logits of any float type are scored in float32.
    """
    return DeepSupervisedLoss(build_loss(config), deep_supervision_weights(outputs))
