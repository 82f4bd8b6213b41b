"""Convolution blocks: conv-BN-ReLU, the UNet double conv, upsample-and-concatenate."""
from ..backend import jt
from ..registry import ModelZooError

nn = jt.nn

__all__ = ["ConvBNReLU", "DoubleConv", "UpConcat", "PooledEncoder", "UNetEncoder"]


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) → BatchNorm → ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvBNReLU layers: the UNet stage."""

    def __init__(self, in_channels, out_channels, mid_channels=None):
        mid_channels = mid_channels or out_channels
        super().__init__(ConvBNReLU(in_channels, mid_channels), ConvBNReLU(mid_channels, out_channels))


class UpConcat(nn.Module):
    """Upsample ×2 to half the channels, concatenate the skip, then a DoubleConv.

    ``mode='transpose'`` uses a 2x2 stride-2 transposed conv; ``'bilinear'`` upsamples
    bilinearly and halves the channels with a 1x1 conv, so both modes keep the same widths.
    """

    def __init__(self, in_channels, skip_channels, out_channels, mode="transpose"):
        super().__init__()
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        elif mode == "bilinear":
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(in_channels, in_channels // 2, 1))
        else:
            raise ModelZooError(f"upsampling must be 'transpose' or 'bilinear', got {mode!r}")
        self.conv = DoubleConv(in_channels // 2 + skip_channels, out_channels)

    def execute(self, x, skip):
        return self.conv(jt.concat([skip, self.up(x)], dim=1))


class PooledEncoder(nn.Module):
    """Stages separated by 2x2 max-pooling, the UNet encoder pattern; returns every stage's output.

    Args:
        stages: modules, the first applied at full resolution, each later one after a max-pool.
        widths: their output channels.
    """

    def __init__(self, stages, widths):
        super().__init__()
        self.stages = nn.ModuleList(list(stages))
        self.widths = list(widths)
        self.pool = nn.MaxPool2d(2, stride=2)

    def execute(self, x):
        features = [self.stages[0](x)]
        for stage in self.stages[1:]:
            features.append(stage(self.pool(features[-1])))
        return features


class UNetEncoder(PooledEncoder):
    """DoubleConv stages of the given widths separated by max-pools; returns every stage's features."""

    def __init__(self, in_channels, widths):
        widths = list(widths)
        super().__init__([DoubleConv(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[:-1], widths)],
                         widths)
