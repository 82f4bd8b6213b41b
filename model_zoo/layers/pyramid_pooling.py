"""Pyramid pooling module of PSPNet (Zhao et al., 2017, "Pyramid Scene Parsing Network",
https://arxiv.org/abs/1612.01105), with PyTorch-style adaptive average pooling.

Jittor's ``nn.AdaptiveAvgPool2d`` uses one fixed window and stride per call, which differs from
PyTorch's bins on most sizes and divides by zero when the map is smaller than the output (a 4x4
map pooled to 6x6, as a 32 px input gives at output stride 8). ``adaptive_avg_pool2d`` here uses
PyTorch's bins on every size.
"""
import numpy as np

from ..backend import jt
from ..registry import ModelZooError
from .conv import ConvBNReLU

nn = jt.nn

__all__ = ["adaptive_avg_pool2d", "PyramidPooling"]


def _bin_averages(size, bins):
    """A ``size x bins`` matrix whose column ``i`` averages bin ``i`` of a length-``size`` axis.

    Bin ``i`` covers ``floor(i * size / bins)`` to ``ceil((i + 1) * size / bins)`` (exclusive), as
    in PyTorch; bins overlap when ``size`` is not a multiple of ``bins`` or is smaller than it.
    """
    weights = np.zeros((size, bins), dtype=np.float32)
    for i in range(bins):
        start, end = i * size // bins, -(-(i + 1) * size // bins)
        weights[start:end, i] = 1.0 / (end - start)
    return weights


def adaptive_avg_pool2d(x, output_size):
    """Average-pool ``x`` (``N x C x H x W``) to ``output_size x output_size`` with PyTorch's bins.

    Works for any map size, including maps smaller than ``output_size`` (bins then repeat pixels).
    Computed as two matrix products with constant averaging matrices (width, then height).
    """
    n, c, h, w = x.shape
    rows = jt.array(_bin_averages(h, output_size))
    cols = jt.array(_bin_averages(w, output_size))
    y = jt.matmul(x.reshape(n * c * h, w), cols)                                 # N C H x out_w
    y = y.reshape(n * c, h, output_size).permute(0, 2, 1).reshape(n * c * output_size, h)
    y = jt.matmul(y, rows)                                                        # N C out_w x out_h
    return y.reshape(n, c, output_size, output_size).permute(0, 1, 3, 2)


class PyramidPooling(nn.Module):
    """The input concatenated with one pooled, reduced and upsampled map per pyramid level.

    Level ``b``: adaptive average pooling to ``b x b``, a 1x1 conv to ``reduction_channels``,
    BatchNorm and ReLU, bilinear upsampling (``align_corners=False``) back to the input size.
    Output: ``in_channels + len(bins) * reduction_channels`` channels, the input first, then the
    levels in the order of ``bins``.

    The ``1 x 1`` level (global pooling) has a conv with bias and no BatchNorm, unlike the paper:
    BatchNorm on a 1x1 map normalises each channel over the batch alone, which with the small
    batches of medical segmentation makes it constant (batch 1) or a sign (batch 2), so the level
    would stop learning.

    Args:
        in_channels: input width.
        bins: output sizes of the pooling levels (default 1, 2, 3, 6 as in the paper).
        reduction_channels: width of each level (default ``in_channels // len(bins)``, the paper's
            1/N reduction).
    """

    def __init__(self, in_channels, bins=(1, 2, 3, 6), reduction_channels=None):
        super().__init__()
        self.bins = tuple(bins)
        if not self.bins or not all(type(b) is int and b > 0 for b in self.bins):
            raise ModelZooError(f"PyramidPooling: bins must be positive integers, got {bins!r}")
        reduction_channels = reduction_channels or in_channels // len(self.bins)
        if reduction_channels < 1:
            raise ModelZooError(f"PyramidPooling: {in_channels} input channels are too few for {len(self.bins)} levels")
        self.levels = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, reduction_channels, 1), nn.ReLU()) if b == 1
            else ConvBNReLU(in_channels, reduction_channels, 1)
            for b in self.bins])
        self.out_channels = in_channels + len(self.bins) * reduction_channels

    def execute(self, x):
        h, w = x.shape[2], x.shape[3]
        levels = [nn.interpolate(level(adaptive_avg_pool2d(x, b)), size=(h, w), mode="bilinear", align_corners=False)
                  for b, level in zip(self.bins, self.levels)]
        return jt.concat([x] + levels, dim=1)
