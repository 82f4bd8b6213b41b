"""Densely connected blocks of DenseNet-BC (Huang et al., 2017, https://arxiv.org/abs/1608.06993)."""
from ..backend import jt

nn = jt.nn

__all__ = ["DenseLayer", "DenseBlock", "Transition"]


class DenseLayer(nn.Sequential):
    """Bottleneck layer: BN-ReLU-1x1 conv to ``bn_size * growth_rate``, BN-ReLU-3x3 conv to
    ``growth_rate``. Returns the new ``growth_rate`` feature maps only; DenseBlock concatenates them."""

    def __init__(self, in_channels, growth_rate, bn_size=4):
        inter_channels = bn_size * growth_rate
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(),
            nn.Conv2d(inter_channels, growth_rate, 3, padding=1, bias=False),
        )


class DenseBlock(nn.Module):
    """``num_layers`` DenseLayers, each fed the concatenation of the block input and every earlier
    layer's output.

    Returns that concatenation: ``out_channels = in_channels + num_layers * growth_rate`` maps, the
    input's first.
    """

    def __init__(self, in_channels, num_layers, growth_rate, bn_size=4):
        super().__init__()
        self.layers = nn.ModuleList([DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size)
                                     for i in range(num_layers)])
        self.out_channels = in_channels + num_layers * growth_rate

    def execute(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(jt.concat(features, dim=1)))
        return jt.concat(features, dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv to ``out_channels``, then 2x2 average pooling with stride 2.

    An odd last row or column is dropped, as ``AvgPool2d(2)`` does.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def execute(self, x):
        x = self.conv(x)
        n, c, h, w = x.shape
        h, w = h // 2, w // 2
        # Reshape-and-mean rather than nn.AvgPool2d, which refuses a 2x2 map (the deepest
        # transition of a 32 px input).
        return x[:, :, :2 * h, :2 * w].reshape(n, c, h, 2, w, 2).mean(dims=(3, 5))
