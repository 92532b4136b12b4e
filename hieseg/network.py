"""The 3D U-Net, built from MONAI's implementation and the saved network configuration."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

from hieseg.config import NetworkConfig


def build_network(config: NetworkConfig) -> torch.nn.Module:
    """A MONAI 3D U-Net that maps (B, 2, X, Y, Z) inputs to (B, 1, X, Y, Z) lesion logits."""
    if len(config.strides) != len(config.channels) - 1:
        raise ValueError(
            f"network needs one stride per down-sampling step: got {len(config.channels)} channel levels "
            f"and {len(config.strides)} strides"
        )
    return UNet(
        spatial_dims=3,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )
