"""Deep supervision as nnU-Net does it: each loss at each output, labels downsampled, weights 1/2^i normalised."""

from __future__ import annotations

import pytest
import torch

from hieseg.config.settings import LOSS_NAMES, LossConfig
from hieseg.model.losses import (
    build_loss,
    build_training_loss,
    deep_supervision_weights,
)

SMOOTH = 1e-5  # MONAI's default smooth_nr = smooth_dr


def test_two_scales_of_dice_by_hand() -> None:
    """Full resolution 2 x 2 x 2, half resolution 1 x 1 x 1; every logit 0, so every probability is 1/2.

    Label: lesion at voxels (0, 0, 0) and (0, 1, 0). Full resolution: intersection 8 x 1/2 over
    the two lesion voxels = 1, so Dice loss = 1 - 2 x 1 / (4 + 2) = 2/3. Half resolution: nnU-Net's
    nearest-exact takes voxel (1, 1, 1), which is not lesion, so the label is 0 and Dice loss =
    1 - 0 / (1/2 + 0) = 1 (max pooling or plain 'nearest', which takes (0, 0, 0), would give 1/3).
    Weights 1 and 1/2, normalised: 2/3 and 1/3. Total 2/3 x 2/3 + 1/3 x 1 = 7/9.
    """
    label = torch.zeros(1, 1, 2, 2, 2)
    label[0, 0, 0, 0, 0] = label[0, 0, 0, 1, 0] = 1.0
    outputs = [torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 1, 1, 1)]
    full = 1 - (2 * 1.0 + SMOOTH) / (4.0 + 2.0 + SMOOTH)
    half = 1 - (0.0 + SMOOTH) / (0.5 + 0.0 + SMOOTH)
    expected = 2 / 3 * full + 1 / 3 * half
    assert expected == pytest.approx(7 / 9, abs=1e-4)
    loss = build_training_loss(LossConfig(name="dice"), outputs=2)(outputs, label)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_the_weights_halve_per_scale_and_sum_to_one() -> None:
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_of_the_study_is_scored_at_each_scale_against_the_downsampled_label(name: str) -> None:
    """Three outputs of a DynUNet whose first down-sampling is in-plane only: 8 x 8 x 4, 4 x 4 x 4, 2 x 2 x 2.

    Each label is brought from the full-resolution one. Nearest-exact takes, for output voxel i of
    an axis shrunk by a factor f, input voxel floor((i + 1/2) f): 2i + 1 for f = 2, 4i + 2 for f = 4.
    So the expected labels are slices, computed here without interpolation.
    """
    generator = torch.Generator().manual_seed(0)
    label = (torch.rand(2, 1, 8, 8, 4, generator=generator) > 0.6).float()
    shapes = [(8, 8, 4), (4, 4, 4), (2, 2, 2)]
    outputs = [torch.randn(2, 1, *shape, generator=generator).requires_grad_() for shape in shapes]
    labels = [label, label[..., 1::2, 1::2, :], label[..., 2::4, 2::4, 1::2]]
    config = LossConfig(name=name)
    plain = build_loss(config)
    expected = sum(w * plain(o, t) for w, o, t in zip([4 / 7, 2 / 7, 1 / 7], outputs, labels))
    loss = build_training_loss(config, outputs=3)(outputs, label)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outputs)


def test_one_output_is_scored_exactly_as_before_deep_supervision_existed() -> None:
    generator = torch.Generator().manual_seed(1)
    label = (torch.rand(2, 1, 6, 6, 6, generator=generator) > 0.7).float()
    logits = torch.randn(2, 1, 6, 6, 6, generator=generator).half()
    config = LossConfig()
    assert torch.equal(build_training_loss(config)(logits, label), build_loss(config)(logits.float(), label))


def test_a_network_returning_another_number_of_outputs_is_an_error() -> None:
    outputs = [torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 2, 2, 2)]
    with pytest.raises(ValueError, match="the network returned 2 output"):
        build_training_loss(LossConfig(name="dice"), outputs=3)(outputs, torch.zeros(1, 1, 4, 4, 4))
