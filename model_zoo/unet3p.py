"""UNet 3+: UNet with full-scale skip connections and full-scale deep supervision.

Huang, Lin, Tong, Hu, Zhang, Iwamoto, Han, Chen and Wu, "UNet 3+: A Full-Scale Connected UNet for
Medical Image Segmentation", ICASSP 2020, https://arxiv.org/abs/2004.08790.

The encoder is the UNet encoder (widths ``base_channels * (1, 2, 4, 8, 16)``, base 64). Every
decoder stage gathers all five scales: shallower encoder maps max-pooled down, the same-level
encoder map, and deeper decoder maps (plus the bottleneck) bilinearly upsampled; each is projected
by a 3x3 conv-BN-ReLU to ``base_channels`` (64) channels, the five are concatenated (320 channels)
and fused by one more 3x3 conv-BN-ReLU. Convolutions followed by BatchNorm carry no bias, so we
have 6,528 fewer parameters than the reference code (26.97 M).

Not included: the classification-guided module (CGM), which predicts from the bottleneck whether
the organ is present and multiplies the side outputs by that decision; it needs an image-level
classification target and loss that the trainer does not have.
"""
from .backend import jt
from .base import SegmentationModel
from .layers import ConvBNReLU, UNetEncoder
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["UNet3Plus", "FullScaleDecoderStage"]


class FullScaleDecoderStage(nn.Module):
    """One UNet 3+ decoder stage at ``level``, fed by a feature map from every scale.

    Args:
        level: resolution level of this stage (0 = full resolution).
        source_channels: channels of the maps from levels ``0..len-1``: encoder maps up to
            ``level``, then decoder stages below it, the deepest being the bottleneck.
        skip_channels: width each source is projected to before concatenation.

    ``execute(sources)`` takes those maps, shallowest first, and returns
    ``len(sources) * skip_channels`` channels at the resolution of ``sources[level]``.
    """

    def __init__(self, level, source_channels, skip_channels):
        super().__init__()
        self.level = level
        self.pools = nn.ModuleList([nn.MaxPool2d(2 ** (level - k), stride=2 ** (level - k)) for k in range(level)])
        self.projections = nn.ModuleList([ConvBNReLU(c, skip_channels) for c in source_channels])
        fused = skip_channels * len(source_channels)
        self.fuse = ConvBNReLU(fused, fused)

    def execute(self, sources):
        size = tuple(sources[self.level].shape[2:])
        resized = []
        for k, source in enumerate(sources):
            if k < self.level:
                source = self.pools[k](source)
            elif k > self.level:
                source = nn.interpolate(source, size=size, mode="bilinear", align_corners=False)
            resized.append(self.projections[k](source))
        return self.fuse(jt.concat(resized, dim=1))


class UNet3Plus(SegmentationModel):
    """UNet 3+ for 2D segmentation, with optional full-scale deep supervision.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: width of the first encoder stage and of each full-scale skip (default 64 as
            in the paper, so decoder stages have 5 x 64 = 320 channels).
        depth: number of downsampling levels (default 4: five scales).
        deep_supervision: add a 3x3 conv head on every deeper decoder stage and on the bottleneck.
            In training mode ``forward_logits`` then returns ``[main, d2, ..., d5]`` (main output
            first, then shallow to deep, at their own resolutions; the base class upsamples them
            bilinearly as the paper does). Eval mode returns the main output only.

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px; sizes not divisible
    by ``2**depth`` are padded internally and cropped back.
    """

    def __init__(self, in_channels=3, num_classes=2, base_channels=64, depth=4, deep_supervision=False):
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ModelZooError(f"UNet 3+: depth and base_channels must be positive, got {depth}, {base_channels}")
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        stage_channels = base_channels * (depth + 1)
        self.deep_supervision = deep_supervision
        self.size_divisor = 2 ** depth
        self.min_input_size = max(32, 2 ** depth)
        self.encoder = UNetEncoder(in_channels, widths)
        # Built deepest first, the order they run in; a stage at `level` reads encoder maps
        # 0..level, then decoder stages level+1..depth-1, then the bottleneck.
        self.stages = nn.ModuleList([
            FullScaleDecoderStage(level, widths[:level + 1] + [stage_channels] * (depth - 1 - level) + [widths[-1]],
                                  base_channels)
            for level in reversed(range(depth))])
        self.head = nn.Conv2d(stage_channels, num_classes, 3, padding=1)
        self.side_heads = nn.ModuleList(
            [nn.Conv2d(c, num_classes, 3, padding=1) for c in [stage_channels] * (depth - 1) + [widths[-1]]]
            if deep_supervision else [])

    def forward_logits(self, x):
        features = self.encoder(x)
        decoded = [features[-1]]  # decoder outputs, deepest first; the bottleneck is the deepest
        for stage in self.stages:
            sources = features[:stage.level + 1] + decoded[::-1]
            decoded.append(stage(sources))
        main = self.head(decoded[-1])
        if not (self.deep_supervision and self.is_training()):
            return main
        deeper = decoded[-2::-1]  # d2 ... bottleneck, shallow to deep
        return [main] + [head(d) for head, d in zip(self.side_heads, deeper)]


@register_model(tiny={"base_channels": 4})
def unet3p(in_channels=3, num_classes=2, base_channels=64, depth=4, deep_supervision=False):
    """UNet 3+ at the paper's widths (base 64, 320-channel decoder)."""
    return UNet3Plus(in_channels, num_classes, base_channels, depth, deep_supervision)
