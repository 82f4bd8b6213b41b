"""UNet (Ronneberger et al., 2015, https://arxiv.org/abs/1505.04597).

Padded 3x3 convolutions with BatchNorm (current practice rather than the paper's valid
convolutions), 2x2 max-pool downsampling, widths ``base_channels * (1, 2, 4, 8, 16)`` at depth 4.
"""
from .backend import jt
from .base import SegmentationModel
from .layers import UNetEncoder, UpConcat
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["UNet"]


class UNet(SegmentationModel):
    """UNet for 2D segmentation.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: width of the first stage (default 64 as in the paper; 32 gives 7.76 M params).
        depth: number of downsampling stages (default 4).
        upsampling: ``'transpose'`` (2x2 transposed conv) or ``'bilinear'``.

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px; sizes not divisible
    by ``2**depth`` are padded internally and cropped back.

    Example:
        >>> model = UNet(in_channels=3, num_classes=2, base_channels=16)
        >>> model(jt.randn(1, 3, 72, 88)).shape
        [1, 2, 72, 88]
    """

    def __init__(self, in_channels=3, num_classes=2, base_channels=64, depth=4, upsampling="transpose"):
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ModelZooError(f"UNet: depth and base_channels must be positive, got {depth}, {base_channels}")
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.size_divisor = 2 ** depth
        self.min_input_size = max(32, 2 ** (depth + 1))  # the deepest 2x2 max-pool needs a map larger than 2x2
        self.encoder = UNetEncoder(in_channels, widths)
        self.decoder = nn.ModuleList([UpConcat(widths[i + 1], widths[i], widths[i], upsampling)
                                      for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward_logits(self, x):
        features = self.encoder(x)
        y = features[-1]
        for up, skip in zip(self.decoder, reversed(features[:-1])):
            y = up(y, skip)
        return self.head(y)


@register_model(tiny={"base_channels": 8})
def unet(in_channels=3, num_classes=2, base_channels=64, depth=4, upsampling="transpose"):
    """UNet at the paper's widths (base 64)."""
    return UNet(in_channels, num_classes, base_channels, depth, upsampling)
