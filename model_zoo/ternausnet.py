"""TernausNet (Iglovikov & Shvets, 2018, "TernausNet: U-Net with VGG11 Encoder Pre-Trained on
ImageNet for Image Segmentation", https://arxiv.org/abs/1801.05746).

A UNet whose encoder is VGG-11 without BatchNorm (``model_zoo.backbones.vgg11``) and whose
decoder blocks are a 3x3 conv-ReLU followed by a 3x3 stride-2 transposed conv-ReLU that doubles
the resolution; the upsampled map is concatenated with the encoder map of the same stride. There
is no normalisation anywhere, as in the paper and the authors' ``UNet11``.
"""
from .backbones import vgg11
from .backend import jt
from .base import SegmentationModel
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["ConvReLU", "TernausDecoderBlock", "TernausNet"]


class ConvReLU(nn.Sequential):
    """3x3 conv (with bias) → ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU())


class TernausDecoderBlock(nn.Sequential):
    """ConvReLU to ``mid_channels``, then a 3x3 stride-2 transposed conv to ``out_channels`` and ReLU (x2 size)."""

    def __init__(self, in_channels, mid_channels, out_channels):
        super().__init__(
            ConvReLU(in_channels, mid_channels),
            nn.ConvTranspose2d(mid_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
        )


class TernausNet(SegmentationModel):
    """TernausNet: VGG-11 encoder, transposed-conv UNet decoder.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        num_filters: decoder base width ``f`` (default 32, the paper's): the centre and decoder
            blocks output ``8f, 8f, 4f, 2f, f`` channels, their inner convs ``16f, 16f, 16f, 8f, 4f``.

    Returns logits ``N x num_classes x H x W``; inputs are padded internally to a multiple of 32.
    At ``num_filters=32`` and one class it has 22,927,393 parameters, as the authors' ``UNet11``.
    """

    size_divisor = 32

    def __init__(self, in_channels=3, num_classes=2, num_filters=32):
        super().__init__()
        if num_filters < 1:
            raise ModelZooError(f"TernausNet: num_filters must be positive, got {num_filters}")
        f = num_filters
        self.encoder = vgg11(in_channels)
        c1, c2, c3, c4, c5 = self.encoder.channels
        self.center = TernausDecoderBlock(c5, 16 * f, 8 * f)
        self.dec5 = TernausDecoderBlock(8 * f + c5, 16 * f, 8 * f)
        self.dec4 = TernausDecoderBlock(8 * f + c4, 16 * f, 4 * f)
        self.dec3 = TernausDecoderBlock(4 * f + c3, 8 * f, 2 * f)
        self.dec2 = TernausDecoderBlock(2 * f + c2, 4 * f, f)
        self.dec1 = ConvReLU(f + c1, f)
        self.final = nn.Conv2d(f, num_classes, 1)

    def forward_logits(self, x):
        conv1, conv2, conv3, conv4, conv5 = self.encoder(x)
        # 2x2 max-pool as a reshape: Jittor's MaxPool2d rejects the 2x2 map of a 32 px input.
        n, c, h, w = conv5.shape
        pooled = conv5.reshape(n, c, h // 2, 2, w // 2, 2).max(dims=(3, 5))
        y = self.center(pooled)
        for block, skip in ((self.dec5, conv5), (self.dec4, conv4), (self.dec3, conv3), (self.dec2, conv2),
                            (self.dec1, conv1)):
            y = block(jt.concat([y, skip], dim=1))
        return self.final(y)


@register_model(tiny={"num_filters": 4})
def ternausnet(in_channels=3, num_classes=2, num_filters=32):
    """TernausNet (UNet11) at the paper's decoder width 32."""
    return TernausNet(in_channels, num_classes, num_filters)
