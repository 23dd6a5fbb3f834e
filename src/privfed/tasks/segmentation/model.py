"""The segmentation network: MONAI's residual UNet with instance or group normalization.

Batch normalization is ruled out: its statistics mix the samples of a batch, so DP-SGD could
not clip one case's gradient on its own. Instance and group norm act per sample, and Opacus
computes per-sample gradients for every layer here (Conv3d, ConvTranspose3d, InstanceNorm3d
or GroupNorm, PReLU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from privfed.tasks.segmentation.layout import MODALITIES

if TYPE_CHECKING:
    from privfed.tasks.segmentation.settings import SegmentationModelSection

__all__ = ["N_CLASSES", "build_unet"]

#: Background, necrotic core, oedema, enhancing tumour.
N_CLASSES = 4


def build_unet(m: SegmentationModelSection) -> nn.Module:
    """A 3-D UNet: 4 modality channels in, 4 class logits out, ``m.channels`` per level."""
    from monai.networks.nets import UNet

    norm = ("instance", {"affine": True}) if m.norm == "instance" else ("group", {"num_groups": 4})
    return UNet(
        spatial_dims=3,
        in_channels=len(MODALITIES),
        out_channels=N_CLASSES,
        channels=tuple(m.channels),
        strides=(2,) * (len(m.channels) - 1),
        num_res_units=m.num_res_units,
        norm=norm,
        act="relu",
    )
