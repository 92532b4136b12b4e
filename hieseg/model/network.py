"""The segmentation networks, built from MONAI's implementations and the saved configuration.

``network.name`` chooses MONAI's ``UNet`` (the default), ``DynUNet`` (nnU-Net's U-Net, with
deep supervision), ``SegResNet`` or ``SwinUNETR``; the section of that name holds its settings
(``hieseg.config.settings``). Each maps (B, 2, X, Y, Z) inputs to (B, 1, X, Y, Z) lesion logits; a
DynUNet with deep supervision returns, while training, a list of logits from the full
resolution down (:func:`supervised_outputs` says how many), which :mod:`hieseg.model.losses` scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from monai.networks.nets import DynUNet, SegResNet, SwinUNETR, UNet

from hieseg.config.settings import (
    NETWORK_NAMES,
    DynUNetConfig,
    ExperimentConfig,
    NetworkConfig,
    SegResNetConfig,
    SwinUNETRConfig,
    UNetConfig,
)

STATE_MARKERS: dict[str, str] = {
    "unet": "model.",
    "dynunet": "input_block.",
    "segresnet": "convInit.",
    "swinunetr": "swinViT.",
}
"""A prefix that the state-dict keys of each network, and of no other, start with."""


class DeepSupervisedDynUNet(DynUNet):
    """MONAI's DynUNet whose training output keeps each supervised scale at its own resolution.

    MONAI's ``forward`` upsamples the heads' logits to the full size and stacks them, so the
    coarse heads would be scored against full-resolution labels; nnU-Net instead scores each
    output against the labels downsampled to its size (:mod:`hieseg.model.losses`). This returns
    ``[full, 1/2, 1/4, ...]`` while training, and the full-resolution logits alone in eval mode,
    as MONAI's does. The modules are MONAI's, so is the state dict.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.output_block(self.skip_layers(x))
        if self.training and self.deep_supervision:
            return [out, *self.heads]
        return out


def build_network(config: ExperimentConfig) -> torch.nn.Module:
    """The network that ``config.network.name`` names, with its section's settings.

    ``config`` was validated when it was built (stage counts, patch sizes the network accepts, ...).
    """
    common = config.network
    network = _BUILDERS[common.name](common, config.network_settings())
    _initialise_output_bias(_output_convolutions(network), common.output_prior)
    return network


def supervised_outputs(config: ExperimentConfig) -> int:
    """How many logit tensors the network returns while training: 1, or more under deep supervision."""
    return 1 + config.dynunet.heads() if config.network.name == "dynunet" else 1


def parameter_count(network: torch.nn.Module) -> int:
    """Trainable parameters (each shared tensor once)."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def network_of_state(state: dict[str, torch.Tensor]) -> str | None:
    """Which network a state dict was saved from (a name of ``NETWORK_NAMES``), None when none fits."""
    names = [name for name, marker in STATE_MARKERS.items()
             if any(isinstance(key, str) and key.startswith(marker) for key in state)]
    return names[0] if len(names) == 1 else None


def _unet(common: NetworkConfig, settings: UNetConfig) -> torch.nn.Module:
    return UNet(
        spatial_dims=3,
        in_channels=common.in_channels,
        out_channels=common.out_channels,
        channels=settings.channels,
        strides=settings.strides,
        num_res_units=settings.num_res_units,
        norm=settings.norm,
        dropout=settings.dropout,
    )


def _dynunet(common: NetworkConfig, settings: DynUNetConfig) -> torch.nn.Module:
    heads = settings.heads()
    return DeepSupervisedDynUNet(
        spatial_dims=3,
        in_channels=common.in_channels,
        out_channels=common.out_channels,
        kernel_size=settings.kernel_size,
        strides=settings.strides,
        upsample_kernel_size=settings.strides[1:],
        filters=settings.filters,
        dropout=settings.dropout or None,
        norm_name=("instance", {"affine": True}) if settings.norm == "instance" else settings.norm,
        deep_supervision=heads > 0,
        deep_supr_num=max(heads, 1),
        res_block=settings.res_block,
    )


def _segresnet(common: NetworkConfig, settings: SegResNetConfig) -> torch.nn.Module:
    norm = ("group", {"num_groups": settings.num_groups}) if settings.norm == "group" else settings.norm
    return SegResNet(
        spatial_dims=3,
        init_filters=settings.init_filters,
        in_channels=common.in_channels,
        out_channels=common.out_channels,
        dropout_prob=settings.dropout or None,
        norm=norm,
        blocks_down=settings.blocks_down,
        blocks_up=settings.blocks_up,
        upsample_mode=settings.upsample_mode,
    )


def _swinunetr(common: NetworkConfig, settings: SwinUNETRConfig) -> torch.nn.Module:
    return SwinUNETR(
        in_channels=common.in_channels,
        out_channels=common.out_channels,
        feature_size=settings.feature_size,
        depths=settings.depths,
        num_heads=settings.num_heads,
        window_size=settings.window_size,
        norm_name=settings.norm,
        drop_rate=settings.drop_rate,
        attn_drop_rate=settings.attn_drop_rate,
        dropout_path_rate=settings.dropout_path_rate,
        use_v2=settings.use_v2,
        use_checkpoint=settings.use_checkpoint,
        spatial_dims=3,
    )


_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "unet": _unet,
    "dynunet": _dynunet,
    "segresnet": _segresnet,
    "swinunetr": _swinunetr,
}

if tuple(_BUILDERS) != NETWORK_NAMES or tuple(STATE_MARKERS) != NETWORK_NAMES:
    raise ImportError(f"hieseg.model.network builds {tuple(_BUILDERS)} but hieseg.config.settings names {NETWORK_NAMES}")


def _output_convolutions(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The convolutions whose outputs are logits: a DynUNet's output block and heads, else the last one.

    The U-Net's logits are the output of its last convolution (plus a residual path); so are
    SegResNet's (``conv_final``) and SwinUNETR's (``out``), each the last convolution it registers.
    """
    if isinstance(network, DynUNet):
        blocks = [network.output_block, *getattr(network, "deep_supervision_heads", [])]
        return [_convolutions(block)[-1] for block in blocks]
    return [_convolutions(network)[-1]]


def _convolutions(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]


def _initialise_output_bias(convolutions: list[torch.nn.Module], prior: float) -> None:
    """Start every voxel at lesion probability ``prior`` (the focal-loss paper's initialisation).

    With the default zero bias the untrained network calls half of the volume lesion, and the
    first hundreds of steps only unlearn that; shifting the bias of the convolutions that
    produce the logits shifts every logit.
    """
    with torch.no_grad():
        for convolution in convolutions:
            convolution.bias.fill_(math.log(prior / (1.0 - prior)))
