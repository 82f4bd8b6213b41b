"""Squeeze-and-excitation blocks: channel (SE / cSE), spatial (sSE) and concurrent (scSE).

* ``SqueezeExcite`` — Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018,
  https://arxiv.org/abs/1709.01507: global average pool, bottleneck MLP, sigmoid, channel rescale.
* ``ChannelSE``, ``SpatialSE``, ``SpatialChannelSE`` — Roy, Navab and Wachinger, "Concurrent Spatial
  and Channel 'Squeeze & Excitation' in Fully Convolutional Networks", MICCAI 2018,
  https://arxiv.org/abs/1803.02579.

Every block returns a tensor of its input's shape. The MLPs are 1x1 convolutions on the pooled
``N x C x 1 x 1`` descriptor (the same weights as fully connected layers, and counted by
``count_flops``).
"""
from ..backend import jt
from ..registry import ModelZooError

nn = jt.nn

__all__ = ["SqueezeExcite", "ChannelSE", "SpatialSE", "SpatialChannelSE"]


class SqueezeExcite(nn.Module):
    """Channel recalibration: ``x * sigmoid(W2 relu(W1 mean_hw(x)))``.

    Args:
        channels: input (and output) channels.
        reduction: bottleneck ratio of the MLP; its hidden width is ``max(1, channels // reduction)``
            (default 16, as in SENet).
    """

    def __init__(self, channels, reduction=16):
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ModelZooError(f"squeeze-excite: channels and reduction must be positive, got {channels}, {reduction}")
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def execute(self, x):
        squeezed = x.mean(dims=(2, 3), keepdims=True)
        return x * jt.sigmoid(self.expand(nn.relu(self.reduce(squeezed))))


class ChannelSE(SqueezeExcite):
    """cSE of Roy et al.: spatial squeeze, channel excitation — the SE block with reduction 2.

    Args:
        channels: input (and output) channels.
        reduction: MLP bottleneck ratio (default 2: the paper's hidden width ``C/2``).
    """

    def __init__(self, channels, reduction=2):
        super().__init__(channels, reduction)


class SpatialSE(nn.Module):
    """sSE of Roy et al.: channel squeeze by a 1x1 conv to one map, spatial excitation.

    Returns ``x * sigmoid(conv1x1(x))``, the same gate for every channel at a pixel.
    """

    def __init__(self, channels):
        super().__init__()
        self.squeeze = nn.Conv2d(channels, 1, 1)

    def execute(self, x):
        return x * jt.sigmoid(self.squeeze(x))


class SpatialChannelSE(nn.Module):
    """scSE of Roy et al.: cSE and sSE applied side by side to the same input and combined.

    Args:
        channels: input (and output) channels.
        reduction: cSE bottleneck ratio (default 2, as in the paper).
        combine: ``'add'`` (default; element-wise sum, the MICCAI 2018 paper) or ``'max'``
            (element-wise maximum, the max-out aggregation of the authors' TMI 2019 extension,
            https://arxiv.org/abs/1808.08127).
    """

    def __init__(self, channels, reduction=2, combine="add"):
        super().__init__()
        if combine not in ("add", "max"):
            raise ModelZooError(f"scSE: combine must be 'add' or 'max', got {combine!r}")
        self.combine = combine
        self.channel = ChannelSE(channels, reduction)
        self.spatial = SpatialSE(channels)

    def execute(self, x):
        channel, spatial = self.channel(x), self.spatial(x)
        return channel + spatial if self.combine == "add" else jt.maximum(channel, spatial)
