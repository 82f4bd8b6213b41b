"""SCSE-UNet: UNet with concurrent spatial and channel squeeze & excitation (scSE) blocks.

Roy, Navab and Wachinger, "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully
Convolutional Networks", MICCAI 2018, https://arxiv.org/abs/1803.02579.

The paper inserts an scSE block after every encoder and decoder block of an F-CNN; here the
F-CNN is this project's UNet (``model_zoo/unet.py``: double conv-BN-ReLU stages of widths
``base_channels * (1, 2, 4, 8, 16)``, 2x2 max-pool, 2x2 transposed-conv upsampling) and the
bottleneck, as the last encoder stage, gets one too. The scSE block
(``model_zoo/layers/squeeze_excite.py``) sums a channel SE with hidden width ``C/2`` and a spatial
SE, as in the MICCAI paper; ``combine='max'`` selects the max-out aggregation of the authors'
later TMI version.
"""
from .backend import jt
from .base import SegmentationModel
from .layers import DoubleConv, PooledEncoder, SpatialChannelSE, UpConcat
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["SCSEUNet", "SCSEUNetEncoder"]


class SCSEUNetEncoder(PooledEncoder):
    """UNet encoder with an scSE block after every stage; returns every stage's recalibrated features."""

    def __init__(self, in_channels, widths, reduction=2, combine="add"):
        widths = list(widths)
        super().__init__([nn.Sequential(DoubleConv(c_in, c_out), SpatialChannelSE(c_out, reduction, combine))
                          for c_in, c_out in zip([in_channels] + widths[:-1], widths)], widths)


class SCSEUNet(SegmentationModel):
    """UNet with scSE recalibration after every encoder and decoder stage.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: width of the first stage (default 64, the UNet paper's; 32.79 M parameters).
        depth: number of downsampling stages (default 4).
        reduction: channel-SE bottleneck ratio (default 2, as in the paper).
        combine: how scSE merges its channel and spatial branches: ``'add'`` (default, the MICCAI
            paper) or ``'max'``.
        upsampling: ``'transpose'`` (2x2 transposed conv) or ``'bilinear'``.

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px; sizes not divisible
    by ``2**depth`` are padded internally and cropped back.
    """

    def __init__(self, in_channels=3, num_classes=2, base_channels=64, depth=4, reduction=2, combine="add",
                 upsampling="transpose"):
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ModelZooError(f"SCSEUNet: depth and base_channels must be positive, got {depth}, {base_channels}")
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.size_divisor = 2 ** depth
        self.min_input_size = max(32, 2 ** depth)
        self.encoder = SCSEUNetEncoder(in_channels, widths, reduction, combine)
        self.decoder = nn.ModuleList([UpConcat(widths[i + 1], widths[i], widths[i], upsampling)
                                      for i in reversed(range(depth))])
        self.decoder_se = nn.ModuleList([SpatialChannelSE(widths[i], reduction, combine)
                                         for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward_logits(self, x):
        features = self.encoder(x)
        y = features[-1]
        for up, se, skip in zip(self.decoder, self.decoder_se, reversed(features[:-1])):
            y = se(up(y, skip))
        return self.head(y)


@register_model(tiny={"base_channels": 8})
def scse_unet(in_channels=3, num_classes=2, base_channels=64, depth=4, reduction=2, combine="add",
              upsampling="transpose"):
    """UNet (base 64) with an scSE block after every encoder and decoder stage."""
    return SCSEUNet(in_channels, num_classes, base_channels, depth, reduction, combine, upsampling)
