"""LinkNet decoder (Chaurasia & Culurciello, 2017, https://arxiv.org/abs/1707.03718) as used by
D-LinkNet and CE-Net: 1x1 reduce, 3x3 stride-2 transposed conv, 1x1 expand, with additive skips.

Convolutions keep their bias before BatchNorm, as in the D-LinkNet and CE-Net reference code, so
parameter counts match theirs.
"""
from ..backend import jt

nn = jt.nn

__all__ = ["LinkNetDecoderBlock", "LinkNetDecoder", "LinkNetHead"]


class LinkNetDecoderBlock(nn.Module):
    """Upsample x2: 1x1 conv to ``in/4``, 3x3 stride-2 transposed conv, 1x1 conv to ``out``; each BN-ReLU.

    Args:
        in_channels: input width (the inner width is ``in_channels // 4``).
        out_channels: output width.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = in_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.deconv2 = nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.norm3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def execute(self, x):
        x = self.relu(self.norm1(self.conv1(x)))
        x = self.relu(self.norm2(self.deconv2(x)))
        return self.relu(self.norm3(self.conv3(x)))


class LinkNetDecoder(nn.Module):
    """Four decoder blocks from stride 32 to stride 2; the first three add the encoder skip.

    Args:
        in_channels: width of the stride-32 input (after any centre block).
        skip_channels: widths of the encoder features at strides 4, 8 and 16 (shallow first), e.g.
            ``(64, 128, 256)`` for ResNet-34. Block ``i`` outputs the width of the skip it adds;
            the last block keeps ``skip_channels[0]``.

    ``execute(x, skips)`` takes ``skips`` at strides 4, 8, 16 (shallow first) and returns the
    stride-2 map with ``skip_channels[0]`` channels.
    """

    def __init__(self, in_channels, skip_channels):
        super().__init__()
        out_widths = list(reversed(skip_channels)) + [skip_channels[0]]
        in_widths = [in_channels] + out_widths[:-1]
        self.blocks = nn.ModuleList([LinkNetDecoderBlock(i, o) for i, o in zip(in_widths, out_widths)])

    def execute(self, x, skips):
        for block, skip in zip(self.blocks, reversed(skips)):
            x = block(x) + skip
        return self.blocks[-1](x)


class LinkNetHead(nn.Sequential):
    """D-LinkNet/CE-Net output head: 4x4 stride-2 transposed conv, ReLU, 3x3 conv, ReLU, 3x3 conv to logits.

    Args:
        in_channels: width of the stride-2 decoder output.
        num_classes: output channels (logits, no activation).
        mid_channels: width of the two hidden layers (32 in both papers).
    """

    def __init__(self, in_channels, num_classes, mid_channels=32):
        super().__init__(
            nn.ConvTranspose2d(in_channels, mid_channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(mid_channels, num_classes, 3, padding=1),
        )
