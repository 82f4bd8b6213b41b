"""ResUNet: a UNet decoder on a ResNet encoder (default ResNet-34).

The layout of segmentation_models_pytorch's ``Unet`` with a ResNet encoder: five decoder blocks
(widths 256, 128, 64, 32, 16), each upsampling x2 (nearest), concatenating the encoder feature at
that stride (``layer3``, ``layer2``, ``layer1``, stem; none for the last) and applying two 3x3
conv-BN-ReLU; then a 3x3 conv to logits. The encoder is an ImageNet-layout ResNet
(He et al., 2016, https://arxiv.org/abs/1512.03385), see ``model_zoo.backbones``.
"""
from .backbones import create_backbone
from .backend import jt
from .base import SegmentationModel
from .layers import DoubleConv
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["UNetDecoderBlock", "ResUNet"]


class UNetDecoderBlock(nn.Module):
    """Nearest x2 upsampling, concatenation with the skip (if any), two 3x3 conv-BN-ReLU.

    Args:
        in_channels: width of the deeper input.
        skip_channels: width of the skip feature (0: no skip).
        out_channels: output width.
    """

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def execute(self, x, skip=None):
        x = nn.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = jt.concat([x, skip], dim=1)
        return self.conv(x)


class ResUNet(SegmentationModel):
    """UNet with a ResNet encoder.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet34"``).
        decoder_channels: widths of the five decoder blocks, deepest first (strides 16, 8, 4, 2, 1;
            default ``(256, 128, 64, 32, 16)``).

    Returns logits ``N x num_classes x H x W``; inputs are padded internally to a multiple of 32.
    With ResNet-34 and one class it has 24,436,369 parameters, as segmentation_models_pytorch's
    ``Unet("resnet34")``.
    """

    size_divisor = 32

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet34", decoder_channels=(256, 128, 64, 32, 16)):
        super().__init__()
        decoder_channels = list(decoder_channels)
        if len(decoder_channels) != 5 or not all(type(c) is int and c > 0 for c in decoder_channels):
            raise ModelZooError(f"ResUNet: decoder_channels must be 5 positive integers, got {decoder_channels!r}")
        self.encoder = create_backbone(encoder, in_channels)
        if self.encoder.strides != [2, 4, 8, 16, 32]:
            raise ModelZooError(f"ResUNet: encoder {encoder!r} gives features at strides {self.encoder.strides}; "
                                "a ResNet (strides 2, 4, 8, 16, 32) is needed")
        skip_widths = list(reversed(self.encoder.channels[:4])) + [0]
        in_widths = [self.encoder.channels[4]] + decoder_channels[:-1]
        self.decoder = nn.ModuleList([UNetDecoderBlock(i, s, o)
                                      for i, s, o in zip(in_widths, skip_widths, decoder_channels)])
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    def forward_logits(self, x):
        features = self.encoder(x)
        y = features[-1]
        skips = list(reversed(features[:-1])) + [None]
        for block, skip in zip(self.decoder, skips):
            y = block(y, skip)
        return self.head(y)


@register_model(tiny={"encoder": "resnet18", "decoder_channels": (16, 16, 8, 8, 8)})
def resunet(in_channels=3, num_classes=2, encoder="resnet34", decoder_channels=(256, 128, 64, 32, 16)):
    """ResUNet with a ResNet-34 encoder and decoder widths 256..16."""
    return ResUNet(in_channels, num_classes, encoder, decoder_channels)


@register_model(tiny={"decoder_channels": (16, 16, 8, 8, 8)})
def resunet18(in_channels=3, num_classes=2, decoder_channels=(256, 128, 64, 32, 16)):
    """Light ResUNet: ResNet-18 encoder, decoder widths 256..16."""
    return ResUNet(in_channels, num_classes, "resnet18", decoder_channels)
