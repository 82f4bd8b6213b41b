"""SegNet (Badrinarayanan et al., 2017, "SegNet: A Deep Convolutional Encoder-Decoder Architecture
for Image Segmentation", IEEE TPAMI, https://arxiv.org/abs/1511.00561).

The encoder is the 13 convolutions of VGG-16 with BatchNorm (torchvision ``vgg16_bn.features``
parameter names, so ImageNet weights map 1:1) and five 2x2 max-pools that remember where each
maximum came from. The decoder mirrors it: each stage max-unpools its input with the indices of
the matching encoder pool (a sparse map, no learned upsampling, no skip features) and densifies
it with 3x3 conv-BN-ReLU layers; the last stage ends in a 3x3 conv to the class logits. Widths and
depths follow the authors' Caffe ``segnet_train.prototxt``; the decoder convs drop the bias their
BatchNorm makes redundant (3,712 parameters fewer than Caffe's at base 64).
"""
from .backbones import VGG
from .backend import jt
from .base import SegmentationModel
from .layers import ConvBNReLU
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["max_pool2x2_with_indices", "SegNetEncoder", "SegNetDecoderStage", "SegNet"]

# VGG-16: convs per stage and stage widths as multiples of the base width (64).
_STAGE_DEPTHS = (2, 2, 3, 3, 3)
_WIDTH_FACTORS = (1, 2, 4, 8, 8)


def max_pool2x2_with_indices(x):
    """2x2 stride-2 max-pool that also returns where each maximum came from.

    Same result as ``nn.MaxPool2d(2, stride=2, return_indices=True)``: the indices are flat
    positions ``row * W + col`` in the input map (the first maximum of a window on ties), which
    ``nn.MaxUnpool2d(2, stride=2)`` inverts. Written as a reshape because Jittor's pool refuses a
    map no larger than its window, i.e. the 2x2 map the fifth pool of a 32 px input sees. The
    gradient reaches only the selected element of each window.

    Args:
        x: ``N x C x H x W`` with even ``H`` and ``W``.

    Returns:
        ``(pooled, indices)``, both ``N x C x H/2 x W/2``; ``indices`` is int32.
    """
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ModelZooError(f"max_pool2x2_with_indices: needs an even height and width, got {h}x{w}")
    oh, ow = h // 2, w // 2
    # Window elements last, in row-major order: position p is at (2i + p // 2, 2j + p % 2).
    windows = x.reshape(n, c, oh, 2, ow, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, oh, ow, 4)
    position, _ = jt.argmax(windows, dim=4)
    selected = (position.unsqueeze(4) == jt.arange(4).int32()).cast(x.dtype)
    pooled = (windows * selected).sum(dim=4)
    rows = jt.arange(oh).int32().reshape(1, 1, oh, 1) * 2 + position // 2
    cols = jt.arange(ow).int32().reshape(1, 1, 1, ow) * 2 + position % 2
    return pooled, rows * w + cols


class SegNetEncoder(VGG):
    """VGG-16-BN features (names ``features.N``) whose pools also return their indices.

    ``execute(x)`` is VGG's: the five stage outputs before their pools (strides 1..16, see
    ``model_zoo.backbones.VGG``). ``encode(x)`` runs all five pools (the fifth, weightless, is not in
    ``features``; see ``VGG``) and returns the stride-32 map and the indices of each pool.

    Args:
        in_channels: image channels.
        base_channels: width of the first stage; the stages are ``1, 2, 4, 8, 8`` times it (64 in VGG-16).
    """

    def __init__(self, in_channels=3, base_channels=64):
        config = []
        for stage, (depth, factor) in enumerate(zip(_STAGE_DEPTHS, _WIDTH_FACTORS)):
            config += (["M"] if stage else []) + [base_channels * factor] * depth
        super().__init__(config, batch_norm=True, in_channels=in_channels)

    def encode(self, x):
        """``(stride-32 map, [indices of pools 1..5])``; ``x`` must have sides divisible by 32."""
        indices = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                x, index = max_pool2x2_with_indices(x)
                indices.append(index)
            else:
                x = layer(x)
        x, index = max_pool2x2_with_indices(x)
        return x, indices + [index]


class SegNetDecoderStage(nn.Module):
    """Max-unpool x2 with the encoder's indices, then ``num_convs`` 3x3 ConvBNReLU layers.

    All convs keep ``in_channels`` except the last, which outputs ``out_channels``.
    """

    def __init__(self, in_channels, out_channels, num_convs):
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        widths = [in_channels] * num_convs + [out_channels]
        self.convs = nn.Sequential(*[ConvBNReLU(i, o) for i, o in zip(widths[:-1], widths[1:])])

    def execute(self, x, indices):
        return self.convs(self.unpool(x, indices))


class SegNet(SegmentationModel):
    """SegNet: VGG-16-BN encoder with pooling indices, mirrored unpooling decoder.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: width of the first stage (default 64, VGG-16's); every stage scales with it.

    Returns logits ``N x num_classes x H x W``; inputs are padded internally to a multiple of 32.
    The decoder mirrors the encoder: stage widths 512, 512, 256, 128, 64 (at base 64) with 3, 3, 3,
    2, 1 ConvBNReLU layers, each stage's last conv narrowing to the next stage's width, then a 3x3
    conv to the logits. At base 64 and 2 classes it has 29,440,450 parameters (paper: 29.5 M).
    """

    size_divisor = 32

    def __init__(self, in_channels=3, num_classes=2, base_channels=64):
        super().__init__()
        if isinstance(base_channels, bool) or not isinstance(base_channels, int) or base_channels < 1:
            raise ModelZooError(f"SegNet: base_channels must be a positive integer, got {base_channels!r}")
        self.encoder = SegNetEncoder(in_channels, base_channels)
        widths = self.encoder.channels
        # Deepest stage first; stage 1 keeps its width and leaves its last conv to the classifier.
        self.decoder = nn.ModuleList([
            SegNetDecoderStage(widths[s], widths[s - 1], _STAGE_DEPTHS[s]) if s else
            SegNetDecoderStage(widths[0], widths[0], _STAGE_DEPTHS[0] - 1)
            for s in reversed(range(len(widths)))
        ])
        self.classifier = nn.Conv2d(widths[0], num_classes, 3, padding=1)

    def forward_logits(self, x):
        y, indices = self.encoder.encode(x)
        for stage, index in zip(self.decoder, reversed(indices)):
            y = stage(y, index)
        return self.classifier(y)


@register_model(tiny={"base_channels": 8})
def segnet(in_channels=3, num_classes=2, base_channels=64):
    """SegNet as in the paper: VGG-16-BN widths (base 64)."""
    return SegNet(in_channels, num_classes, base_channels)


@register_model(tiny={"base_channels": 8})
def segnet_light(in_channels=3, num_classes=2, base_channels=32):
    """SegNet at half the widths (base 32), about a quarter of the parameters."""
    return SegNet(in_channels, num_classes, base_channels)
