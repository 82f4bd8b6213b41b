"""2D DenseUNet of "H-DenseUNet: Hybrid Densely Connected UNet for Liver and Tumor Segmentation from CT
Volumes", Li, Chen, Qi, Dou, Fu and Heng, 2018, https://arxiv.org/abs/1709.07330.

Encoder: DenseNet-BC (the paper's 2D DenseUNet-167 uses DenseNet-161: 96-channel 7x7 stride-2 stem,
3x3 max-pool, growth rate 48, dense blocks of 6/12/36/24 layers, transitions halving the channels).
Decoder (the paper's Table 1 and the authors' code): five upsampling layers, each a x2 upsampling,
an element-wise sum with the encoder feature of that resolution (the dense block outputs before
their transitions, and the stem), and a 3x3 conv-BN-ReLU; widths 768, 384, 96, 96, 64 for
DenseNet-161. The sum forces each width to equal the next skip's channels, so the widths follow
from the encoder. Block 3's output has fewer channels than block 4's, so it is first projected by a
1x1 convolution. The last layer has no skip; the authors' code applies dropout 0.3 before the
classifier.
"""
from .backend import jt
from .base import SegmentationModel
from .layers import ConvBNReLU, DenseBlock, Transition
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["DenseUNet", "DenseNetEncoder"]


class DenseNetEncoder(nn.Module):
    """DenseNet-BC feature extractor: stem conv-BN-ReLU (7x7, stride 2), 3x3 max-pool (stride 2),
    dense blocks joined by transitions, BN-ReLU after the last block.

    ``execute`` returns ``[stem (1/2), block 1 (1/4), ..., last block (1/2**(n+1))]``: every block but
    the last is taken before its transition. ``channels`` lists their widths.
    """

    def __init__(self, in_channels, stem_channels=96, growth_rate=48, block_layers=(6, 12, 36, 24), bn_size=4,
                 compression=0.5):
        super().__init__()
        self.stem = ConvBNReLU(in_channels, stem_channels, kernel_size=7, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.channels = [stem_channels]
        blocks, transitions = [], []
        width = stem_channels
        for i, num_layers in enumerate(block_layers):
            blocks.append(DenseBlock(width, num_layers, growth_rate, bn_size))
            width = blocks[-1].out_channels
            self.channels.append(width)
            if i < len(block_layers) - 1:
                transitions.append(Transition(width, int(width * compression)))
                width = int(width * compression)
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.final_norm = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())

    def execute(self, x):
        features = [self.stem(x)]
        x = self.pool(features[0])
        for block, transition in zip(self.blocks, self.transitions):
            features.append(block(x))
            x = transition(features[-1])
        features.append(self.final_norm(self.blocks[-1](x)))
        return features


class SumUpsample(nn.Module):
    """Bilinear x2 upsampling, element-wise sum with a skip (1x1-projected to the upsampled width
    when ``skip_channels`` differs), then a 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.lateral = nn.Conv2d(skip_channels, in_channels, 1) if skip_channels != in_channels else None
        self.conv = ConvBNReLU(in_channels, out_channels)

    def execute(self, x, skip):
        x = nn.interpolate(x, size=tuple(skip.shape[2:]), mode="bilinear", align_corners=False)
        return self.conv(x + (self.lateral(skip) if self.lateral is not None else skip))


class DenseUNet(SegmentationModel):
    """UNet-like network with a DenseNet-BC encoder and H-DenseUNet's summing decoder.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        growth_rate: DenseNet growth rate (default 48, DenseNet-161).
        block_layers: layers of each dense block (default ``(6, 12, 36, 24)``).
        stem_channels: width of the 7x7 stem (default 96).
        final_channels: width of the last upsampling layer, the one without a skip (default 64).
        dropout: dropout rate before the classifier (default 0.3, the authors' code).

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px.

    Example:
        >>> model = DenseUNet(in_channels=1, num_classes=2, growth_rate=4, block_layers=(2, 2, 2, 2), stem_channels=8)
        >>> model(jt.randn(1, 1, 72, 88)).shape
        [1, 2, 72, 88]
    """

    def __init__(self, in_channels=3, num_classes=2, growth_rate=48, block_layers=(6, 12, 36, 24), stem_channels=96,
                 final_channels=64, dropout=0.3):
        super().__init__()
        block_layers = tuple(block_layers)
        if len(block_layers) < 2 or min(block_layers) < 1 or min(growth_rate, stem_channels, final_channels) < 1:
            raise ModelZooError(f"DenseUNet: need at least 2 dense blocks of >= 1 layer and positive widths, got "
                                f"block_layers={block_layers}, growth_rate={growth_rate}, "
                                f"stem_channels={stem_channels}, final_channels={final_channels}")
        self.size_divisor = 2 ** (len(block_layers) + 1)
        self.min_input_size = max(32, self.size_divisor)
        self.encoder = DenseNetEncoder(in_channels, stem_channels, growth_rate, block_layers)
        skips = self.encoder.channels[:-1]
        # Each layer's output is summed with the next skip, so it takes that skip's width.
        widths = [self.encoder.channels[-1]] + skips[-2::-1] + [skips[0]]
        self.decoder = nn.ModuleList([SumUpsample(widths[i], skip, widths[i + 1])
                                      for i, skip in enumerate(reversed(skips))])
        self.final = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                   ConvBNReLU(widths[-1], final_channels), nn.Dropout(dropout))
        self.head = nn.Conv2d(final_channels, num_classes, 1)

    def forward_logits(self, x):
        features = self.encoder(x)
        y = features[-1]
        for up, skip in zip(self.decoder, reversed(features[:-1])):
            y = up(y, skip)
        return self.head(self.final(y))


@register_model(tiny={"growth_rate": 4, "block_layers": (2, 2, 2, 2), "stem_channels": 8, "final_channels": 8})
def dense_unet(in_channels=3, num_classes=2, growth_rate=48, block_layers=(6, 12, 36, 24), stem_channels=96,
               final_channels=64, dropout=0.3):
    """2D DenseUNet-167 of H-DenseUNet: DenseNet-161 encoder (growth 48, blocks 6/12/36/24)."""
    return DenseUNet(in_channels, num_classes, growth_rate, block_layers, stem_channels, final_channels, dropout)


@register_model(tiny={"growth_rate": 4, "block_layers": (2, 2, 2, 2), "stem_channels": 8, "final_channels": 8})
def dense_unet_light(in_channels=3, num_classes=2, growth_rate=32, block_layers=(6, 12, 24, 16), stem_channels=64,
                     final_channels=64, dropout=0.3):
    """DenseUNet with a DenseNet-121 encoder (growth 32, blocks 6/12/24/16)."""
    return DenseUNet(in_channels, num_classes, growth_rate, block_layers, stem_channels, final_channels, dropout)
