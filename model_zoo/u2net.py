"""U²-Net and U²-NetP: nested U-structures of residual U-blocks (RSU).

Qin, Zhang, Huang, Dehghan, Zaiane and Jagersand, "U²-Net: Going Deeper with Nested U-Structure
for Salient Object Detection", Pattern Recognition 2020, https://arxiv.org/abs/2005.09007.

Each stage of the outer U is itself a small U-Net, the residual U-block ``RSU-L``: an input conv,
an ``L``-level encoder-decoder of 3x3 conv-BN-ReLU layers (2x2 max-pool down, bilinear up,
concatenating skips) with a dilation-2 conv at the bottom, and a residual sum with the input conv.
``RSU-4F`` replaces pooling by growing dilation (1, 2, 4, 8) so the deepest stages, already at
1/16 and 1/32 resolution, keep their size. The outer U has six encoder stages (RSU-7, 6, 5, 4,
4F, 4F) and five decoder stages; a 3x3 conv on stage 6 and on each decoder stage gives six side
outputs, upsampled bilinearly to the input size and fused by a 1x1 conv.

Differences from the reference code: convolutions followed by BatchNorm have no bias (BatchNorm
absorbs it), which leaves 14,400 fewer parameters in U²-Net and 2,848 fewer in U²-NetP than the
reference's 44,009,869 and 1,131,181 (one output class); and the heads return logits (the paper
applies a sigmoid to every output inside the network).
"""
from .backend import jt
from .base import SegmentationModel
from .layers import ConvBNReLU, PooledEncoder
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["RSU", "U2Net", "U2NetEncoder"]

# Stage layouts in units of base_channels / 4: (RSU height, dilated 'F' variant, mid, out).
# Encoder stages 1..6, then decoder stages 5d..1d (deepest first).
_U2NET_ENCODER = ((7, False, 2, 4), (6, False, 2, 8), (5, False, 4, 16), (4, False, 8, 32),
                  (4, True, 16, 32), (4, True, 16, 32))
_U2NET_DECODER = ((4, True, 16, 32), (4, False, 8, 16), (5, False, 4, 8), (6, False, 2, 4), (7, False, 1, 4))
_U2NETP_ENCODER = ((7, False, 1, 4), (6, False, 1, 4), (5, False, 1, 4), (4, False, 1, 4),
                   (4, True, 1, 4), (4, True, 1, 4))
_U2NETP_DECODER = ((4, True, 1, 4), (4, False, 1, 4), (5, False, 1, 4), (6, False, 1, 4), (7, False, 1, 4))


def _upsample_like(x, reference):
    return nn.interpolate(x, size=tuple(reference.shape[2:]), mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block ``RSU-L`` (``dilated=False``) or ``RSU-LF`` (``dilated=True``).

    Args:
        in_channels: input channels.
        mid_channels: width inside the U.
        out_channels: output channels (of the input conv and of the residual sum).
        height: ``L``, the number of encoder levels counting the dilated bottom (>= 2).
        dilated: replace the ``L - 2`` max-pools by dilations ``1, 2, 4, ...`` (the 'F' variant),
            so every level keeps the input resolution.

    The plain variant halves the resolution ``L - 2`` times, so its input sides must be divisible
    by ``2 ** (L - 2)``, with the deepest pooled map at least 4 px (Jittor's pool rejects a map
    equal to its kernel).
    """

    def __init__(self, in_channels, mid_channels, out_channels, height, dilated=False):
        super().__init__()
        if height < 2:
            raise ModelZooError(f"RSU: height must be at least 2, got {height}")
        self.dilated = dilated
        # Level i (0-based) uses dilation 2**i in the 'F' variant, 1 otherwise; the bottom level
        # doubles the dilation of the level above it.
        dilations = [2 ** i if dilated else 1 for i in range(height - 1)]
        self.conv_in = ConvBNReLU(in_channels, out_channels)
        self.down = nn.ModuleList([ConvBNReLU(out_channels if i == 0 else mid_channels, mid_channels, dilation=d)
                                   for i, d in enumerate(dilations)])
        self.bottom = ConvBNReLU(mid_channels, mid_channels, dilation=2 * dilations[-1])
        self.up = nn.ModuleList([ConvBNReLU(2 * mid_channels, out_channels if i == 0 else mid_channels, dilation=d)
                                 for i, d in enumerate(dilations)])
        self.pool = nn.MaxPool2d(2, stride=2)

    def execute(self, x):
        x_in = self.conv_in(x)
        skips = []
        y = x_in
        for i, conv in enumerate(self.down):
            if i and not self.dilated:
                y = self.pool(y)
            y = conv(y)
            skips.append(y)
        y = self.bottom(y)
        for i in reversed(range(len(self.up))):
            y = self.up[i](jt.concat([y, skips[i]], dim=1))
            if i and not self.dilated:
                y = _upsample_like(y, skips[i - 1])
        return y + x_in


class U2NetEncoder(PooledEncoder):
    """The six RSU stages of the outer U with 2x2 max-pools between them; returns every stage's output."""

    def __init__(self, in_channels, stages):
        blocks, previous = [], in_channels
        for height, dilated, mid, out in stages:
            blocks.append(RSU(previous, mid, out, height, dilated))
            previous = out
        super().__init__(blocks, [stage[3] for stage in stages])


class U2Net(SegmentationModel):
    """U²-Net (``small=False``) or U²-NetP (``small=True``) for 2D segmentation.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no sigmoid/softmax).
        base_channels: output width of the first stage, 64 in both papers' networks; every width
            scales with it, so it must be a multiple of 4. U²-Net's stage widths (mid/out) are
            32/64, 32/128, 64/256, 128/512, 256/512, 256/512 at base 64 (44.0 M parameters);
            U²-NetP uses 16/64 in every stage (1.13 M).
        small: build U²-NetP instead of U²-Net.

    Returns:
        Logits ``N x num_classes x H x W``. In training mode ``forward_logits`` returns the seven
        outputs the paper supervises, ``[fused, side1, ..., side6]`` (side ``k`` comes from decoder
        stage ``k``, side 6 from encoder stage 6), all already upsampled to the input size; eval
        mode returns the fused output. Inputs are padded to a multiple of 32 and must be at least
        64 px (stage 1 pools a 64 px input down to 4 px before its last pool).
    """

    size_divisor = 32
    min_input_size = 64

    def __init__(self, in_channels=3, num_classes=2, base_channels=64, small=False):
        super().__init__()
        if base_channels < 4 or base_channels % 4:
            raise ModelZooError(f"U2Net: base_channels must be a positive multiple of 4, got {base_channels}")
        unit = base_channels // 4
        encoder, decoder = (_U2NETP_ENCODER, _U2NETP_DECODER) if small else (_U2NET_ENCODER, _U2NET_DECODER)
        self.encoder = U2NetEncoder(in_channels, [(height, dilated, mid * unit, out * unit)
                                                  for height, dilated, mid, out in encoder])
        widths = self.encoder.widths
        stages, previous = [], widths[-1]
        for skip, (height, dilated, mid, out) in zip(reversed(widths[:-1]), decoder):
            stages.append(RSU(previous + skip, mid * unit, out * unit, height, dilated))
            previous = out * unit
        self.decoder = nn.ModuleList(stages)
        # sides[k] reads decoder stage k + 1 (k < 5) or encoder stage 6 (k = 5).
        side_widths = [out * unit for _, _, _, out in reversed(decoder)] + [widths[-1]]
        self.sides = nn.ModuleList([nn.Conv2d(width, num_classes, 3, padding=1) for width in side_widths])
        self.fuse = nn.Conv2d(6 * num_classes, num_classes, 1)

    def forward_logits(self, x):
        features = self.encoder(x)
        y, decoded = features[-1], []
        for stage, skip in zip(self.decoder, reversed(features[:-1])):
            y = stage(jt.concat([_upsample_like(y, skip), skip], dim=1))
            decoded.append(y)
        sources = list(reversed(decoded)) + [features[-1]]
        sides = [_upsample_like(head(feature), x) for head, feature in zip(self.sides, sources)]
        fused = self.fuse(jt.concat(sides, dim=1))
        return [fused] + sides if self.is_training() else fused


@register_model(tiny={"base_channels": 8})
def u2net(in_channels=3, num_classes=2, base_channels=64):
    """U²-Net, the full model (44.0 M parameters at base 64)."""
    return U2Net(in_channels, num_classes, base_channels, small=False)


@register_model(tiny={"base_channels": 8})
def u2netp(in_channels=3, num_classes=2, base_channels=64):
    """U²-NetP, the small model (1.13 M parameters at base 64)."""
    return U2Net(in_channels, num_classes, base_channels, small=True)
