"""MultiResUNet: UNet with MultiRes blocks and residual skip paths.

Ibtehaz and Rahman, "MultiResUNet: Rethinking the U-Net architecture for multimodal biomedical
image segmentation", Neural Networks 121, 2020, https://arxiv.org/abs/1902.04049.

Each UNet double conv becomes a MultiRes block: for a UNet stage of ``U`` filters, ``W = alpha * U``
(alpha 1.67) filters are split over a chain of three 3x3 convolutions (``int(0.167 W)``,
``int(0.333 W)`` and ``int(0.5 W)`` filters, the factors of the authors' code) whose outputs are
concatenated — a cheap 3x3 / 5x5 / 7x7 receptive-field mix — plus a 1x1 residual shortcut. Each
skip connection passes through a Res path of 4, 3, 2 and 1 residual 3x3 convolutions (shallow to
deep) with ``U`` filters, to narrow the semantic gap between encoder and decoder features.

As in the authors' Keras code (whose 7,262,750 parameters the paper reports), the BatchNorm after
each convolution learns a shift but no scale, and convolutions carry no bias. The output head is a
plain 1x1 convolution with bias instead of the reference's 1x1 conv + BatchNorm: normalising the
logits would bound their range and keep a cross-entropy loss from converging. At ``num_classes=1``
the learnable parameters equal the reference's trainable ones, 7,238,228; the paper's count adds
BatchNorm running statistics.
"""
from .backend import jt
from .base import SegmentationModel
from .layers import PooledEncoder
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["MultiResUNet", "MultiResBlock", "ResPath", "multires_widths"]


def multires_widths(unet_channels, alpha=1.67):
    """Filters of the three chained 3x3 convolutions of a MultiRes block for a UNet stage width."""
    w = alpha * unet_channels
    return int(w * 0.167), int(w * 0.333), int(w * 0.5)


class ConvShiftBN(nn.Module):
    """Conv (no bias) → BatchNorm with a learned shift but no learned scale → optional ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, affine=False)
        self.shift = jt.zeros(out_channels)
        self.relu = relu

    def execute(self, x):
        x = self.norm(self.conv(x)) + self.shift.reshape(1, -1, 1, 1)
        return nn.relu(x) if self.relu else x


class MultiResBlock(nn.Module):
    """Chain of three 3x3 conv-BN-ReLU whose outputs are concatenated, plus a 1x1 shortcut.

    Output = BN(ReLU(BN(concat(a, b, c)) + shortcut(x))) with ``sum(multires_widths(U, alpha))``
    channels.
    """

    def __init__(self, in_channels, unet_channels, alpha=1.67):
        super().__init__()
        widths = multires_widths(unet_channels, alpha)
        self.out_channels = sum(widths)
        self.shortcut = ConvShiftBN(in_channels, self.out_channels, 1, relu=False)
        chain, previous = [], in_channels
        for width in widths:
            chain.append(ConvShiftBN(previous, width, 3))
            previous = width
        self.chain = nn.ModuleList(chain)
        self.concat_norm = nn.BatchNorm2d(self.out_channels)
        self.out_norm = nn.BatchNorm2d(self.out_channels)

    def execute(self, x):
        outputs, y = [], x
        for conv in self.chain:
            y = conv(y)
            outputs.append(y)
        y = self.concat_norm(jt.concat(outputs, dim=1)) + self.shortcut(x)
        return self.out_norm(nn.relu(y))


class ResPath(nn.Module):
    """``length`` residual units: BN(ReLU(conv3x3-BN-ReLU(x) + conv1x1-BN(x))), all ``channels`` wide."""

    def __init__(self, in_channels, channels, length):
        super().__init__()
        self.convs = nn.ModuleList([ConvShiftBN(in_channels if i == 0 else channels, channels, 3)
                                    for i in range(length)])
        self.shortcuts = nn.ModuleList([ConvShiftBN(in_channels if i == 0 else channels, channels, 1, relu=False)
                                        for i in range(length)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(length)])

    def execute(self, x):
        for conv, shortcut, norm in zip(self.convs, self.shortcuts, self.norms):
            x = norm(nn.relu(conv(x) + shortcut(x)))
        return x


class MultiResEncoder(PooledEncoder):
    """MultiRes blocks separated by 2x2 max-pools; returns every block's output, deepest last."""

    def __init__(self, in_channels, unet_widths, alpha):
        blocks, previous = [], in_channels
        for width in unet_widths:
            blocks.append(MultiResBlock(previous, width, alpha))
            previous = blocks[-1].out_channels
        super().__init__(blocks, [block.out_channels for block in blocks])


class MultiResUNet(SegmentationModel):
    """MultiResUNet for 2D segmentation.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: ``U`` of the first stage; stages use ``U * (1, 2, 4, 8, 16)`` (default 32 as
            in the paper: 7.24 M learnable parameters).
        alpha: MultiRes block width factor, ``W = alpha * U`` (default 1.67).

    Four 2x2 max-pools; upsampling by 2x2 stride-2 transposed convolutions to ``U`` channels,
    concatenated with the Res path output (``U`` channels) of the same level.

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px; sizes not divisible
    by 16 are padded internally and cropped back.
    """

    size_divisor = 16

    def __init__(self, in_channels=3, num_classes=2, base_channels=32, alpha=1.67):
        super().__init__()
        if base_channels < 1 or alpha <= 0:
            raise ModelZooError(f"MultiResUNet: base_channels and alpha must be positive, got {base_channels}, {alpha}")
        if min(multires_widths(base_channels, alpha)) < 1:
            raise ModelZooError(f"MultiResUNet: base_channels={base_channels} with alpha={alpha} leaves a MultiRes "
                                f"block convolution without filters; use alpha * base_channels >= 6")
        unet_widths = [base_channels * 2 ** i for i in range(5)]
        self.encoder = MultiResEncoder(in_channels, unet_widths, alpha)
        block_channels = [block.out_channels for block in self.encoder.stages]
        self.res_paths = nn.ModuleList([ResPath(block_channels[i], unet_widths[i], length)
                                        for i, length in enumerate((4, 3, 2, 1))])
        # Decoder, deepest level first: upsample to U channels, concatenate the Res path, MultiRes block.
        ups, blocks, previous = [], [], block_channels[-1]
        for level in reversed(range(4)):
            ups.append(nn.ConvTranspose2d(previous, unet_widths[level], 2, stride=2))
            blocks.append(MultiResBlock(2 * unet_widths[level], unet_widths[level], alpha))
            previous = blocks[-1].out_channels
        self.ups = nn.ModuleList(ups)
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(previous, num_classes, 1)

    def forward_logits(self, x):
        features = self.encoder(x)
        skips = [path(f) for path, f in zip(self.res_paths, features[:-1])]
        y = features[-1]
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips)):
            y = block(jt.concat([up(y), skip], dim=1))
        return self.head(y)


@register_model(tiny={"base_channels": 8})
def multiresunet(in_channels=3, num_classes=2, base_channels=32, alpha=1.67):
    """MultiResUNet at the paper's widths (U = 32, alpha = 1.67)."""
    return MultiResUNet(in_channels, num_classes, base_channels, alpha)
