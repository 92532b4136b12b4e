"""The 3D U-Net, built from MONAI's implementation and the saved network configuration."""

from __future__ import annotations

import math

import torch
from monai.networks.nets import UNet

from hieseg.config import NetworkConfig


def build_network(config: NetworkConfig) -> torch.nn.Module:
    """A MONAI 3D U-Net that maps (B, 2, X, Y, Z) inputs to (B, 1, X, Y, Z) lesion logits.

    ``config`` was validated when it was built (one stride per level, prior in (0, 1), ...).
    """
    network = UNet(
        spatial_dims=3,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )
    _initialise_output_bias(network, config.output_prior)
    return network


def _initialise_output_bias(network: torch.nn.Module, prior: float) -> None:
    """Start every voxel at lesion probability ``prior`` (the focal-loss paper's initialisation).

    With the default zero bias the untrained network calls half of the volume lesion, and the
    first hundreds of steps only unlearn that; the U-Net's logits are the output of its last
    convolution (plus a residual path), so shifting that bias shifts every logit.
    """
    last = [m for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))][-1]
    with torch.no_grad():
        last.bias.fill_(math.log(prior / (1.0 - prior)))
