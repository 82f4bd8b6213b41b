"""HarDNet encoders (Chao et al., 2019, "HarDNet: A Low Memory Traffic Network", ICCV,
https://arxiv.org/abs/1909.00948) with the parameter names of the authors' PyTorch code.

A HarDNet is a stem (3x3 stride-2 conv, 3x3 conv, 3x3 stride-2 max-pool) followed by harmonic
dense blocks, each closed by a 1x1 "transition" conv and, where the configuration says so, a 2x2
max-pool. Every module sits in one list ``base`` exactly as in the authors' ``HarDNet``
(``base.0.conv.weight``, ``base.3.layers.7.norm.running_mean``, ``base.15.conv.weight``, ...), so
their ImageNet weights map 1:1; the classifier (``base.16``: global pool, dropout, ``Linear``) is
left out. Conv layers are conv (no bias) → BatchNorm → ReLU6, as in the authors' ``ConvLayer``.
"""
from ..backend import jt
from ..registry import ModelZooError

nn = jt.nn

__all__ = ["ConvLayer", "HarDBlock", "HarDNet", "MaxPool2x2", "harmonic_links", "hardnet68"]


def harmonic_links(layer):
    """The earlier layers that layer ``layer`` (1-based; 0 is the block input) reads.

    Layer ``k`` reads layer ``k - 2**i`` for every power of two ``2**i`` dividing ``k``: odd layers
    read only their predecessor, layer 4 reads 3, 2 and 0, layer 8 reads 7, 6, 4 and 0.
    """
    if layer < 1:
        raise ModelZooError(f"harmonic_links: layer must be >= 1, got {layer}")
    return [layer - 2 ** i for i in range(layer.bit_length()) if layer % 2 ** i == 0]


def _layer_width(links, growth_rate, multiplier):
    # growth_rate x multiplier per link beyond the first, rounded to an even width; the float
    # products are taken one at a time, as in the authors' code, so widths match theirs exactly.
    width = growth_rate
    for _ in links[1:]:
        width *= multiplier
    return int(width + 1) // 2 * 2


class ConvLayer(nn.Module):
    """Conv (no bias, "same" padding) → BatchNorm → ReLU6, named ``conv``/``norm``/``relu``."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU6()

    def execute(self, x):
        return self.relu(self.norm(self.conv(x)))


class HarDBlock(nn.Module):
    """Harmonic dense block: layer ``k`` convolves the concatenation of its ``harmonic_links(k)``.

    Layer ``k`` outputs ``growth_rate * multiplier ** (len(links) - 1)`` channels, rounded to an
    even number, so layers with many links (the ones at powers of two) are wider. The block outputs
    the concatenation of its odd layers and its last layer (the input is not kept).

    Args:
        in_channels: input width.
        growth_rate: width of the layers with a single link.
        multiplier: width factor per additional link (1.7 in HarDNet-68).
        num_layers: number of 3x3 ConvLayers.

    ``in_widths`` / ``out_widths`` give each layer's input and output width and ``out_channels`` the
    block's output width.
    """

    def __init__(self, in_channels, growth_rate, multiplier, num_layers):
        super().__init__()
        self.links = [harmonic_links(k) for k in range(1, num_layers + 1)]
        widths = [in_channels]
        self.in_widths = []
        for links in self.links:
            self.in_widths.append(sum(widths[j] for j in links))
            widths.append(_layer_width(links, growth_rate, multiplier))
        self.out_widths = widths[1:]
        self._kept = [k for k in range(1, num_layers + 1) if k % 2 == 1 or k == num_layers]
        self.out_channels = sum(widths[k] for k in self._kept)
        self.layers = nn.ModuleList([ConvLayer(i, o) for i, o in zip(self.in_widths, self.out_widths)])

    def execute(self, x):
        outputs = [x]
        for layer, links in zip(self.layers, self.links):
            inputs = [outputs[j] for j in links]
            outputs.append(layer(jt.concat(inputs, dim=1) if len(inputs) > 1 else inputs[0]))
        return jt.concat([outputs[k] for k in self._kept], dim=1)


class MaxPool2x2(nn.Module):
    """2x2 stride-2 max-pool (floor mode), written as a reshape.

    Same result as ``nn.MaxPool2d(2, stride=2)``, which Jittor refuses on a map no larger than its
    window: the 2x2 map the last pool of a HarDNet sees on a 32 px input.
    """

    def execute(self, x):
        n, c, h, w = x.shape
        oh, ow = h // 2, w // 2
        return x[:, :, :2 * oh, :2 * ow].reshape(n, c, oh, 2, ow, 2).max(dims=(3, 5))


class HarDNet(nn.Module):
    """HarDNet feature extractor: stem, then per stage a HarDBlock, a 1x1 ConvLayer and maybe a pool.

    Args:
        stem_channels: widths of the two stem convs (``(32, 64)`` in HarDNet-68).
        growth_rates: growth rate of each stage's HarDBlock.
        num_layers: layers of each stage's HarDBlock.
        stage_channels: output width of each stage's 1x1 ConvLayer.
        downsample: per stage, whether a 2x2 max-pool follows it.
        multiplier: HarDBlock width multiplier (1.7 in HarDNet-68).
        in_channels: image channels.

    ``execute(x)`` returns, shallow first, the stem's second conv (stride 2) and the output of every
    stage that is followed by a pool or is the last: for HarDNet-68 five maps with widths
    ``channels = [64, 128, 320, 640, 1024]`` at ``strides = [2, 4, 8, 16, 32]``.
    """

    def __init__(self, stem_channels, growth_rates, num_layers, stage_channels, downsample, multiplier,
                 in_channels=3):
        super().__init__()
        if not len(growth_rates) == len(num_layers) == len(stage_channels) == len(downsample):
            raise ModelZooError("HarDNet: growth_rates, num_layers, stage_channels and downsample need one entry "
                                "per stage")
        base = [ConvLayer(in_channels, stem_channels[0], 3, stride=2), ConvLayer(stem_channels[0], stem_channels[1]),
                nn.MaxPool2d(3, stride=2, padding=1)]
        self._feature_indices, self.channels, self.strides = [1], [stem_channels[1]], [2]
        width, stride = stem_channels[1], 4
        for i, (growth, layers, out_width, pool) in enumerate(zip(growth_rates, num_layers, stage_channels,
                                                                  downsample)):
            block = HarDBlock(width, growth, multiplier, layers)
            base += [block, ConvLayer(block.out_channels, out_width, 1)]
            width = out_width
            if pool or i == len(growth_rates) - 1:
                self._feature_indices.append(len(base) - 1)
                self.channels.append(width)
                self.strides.append(stride)
            if pool:
                base.append(MaxPool2x2())
                stride *= 2
        self.base = nn.ModuleList(base)

    def execute(self, x):
        features = []
        for i, layer in enumerate(self.base):
            x = layer(x)
            if i in self._feature_indices:
                features.append(x)
        return features


def hardnet68(in_channels=3):
    """HarDNet-68: 16,540,348 parameters (the authors' 17,565,348 less the 1,025,000 of the classifier)."""
    return HarDNet(stem_channels=(32, 64), growth_rates=(14, 16, 20, 40, 160), num_layers=(8, 16, 16, 16, 4),
                   stage_channels=(128, 256, 320, 640, 1024), downsample=(True, False, True, True, False),
                   multiplier=1.7, in_channels=in_channels)
