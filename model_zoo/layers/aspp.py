"""Atrous spatial pyramid pooling (ASPP) of DeepLab v3 (Chen et al., 2017, "Rethinking Atrous
Convolution for Semantic Image Segmentation", https://arxiv.org/abs/1706.05587) and DeepLab v3+
(Chen et al., 2018, https://arxiv.org/abs/1802.02611).
"""
from ..backend import jt
from ..registry import ModelZooError
from .conv import ConvBNReLU

nn = jt.nn

__all__ = ["ASPPPooling", "ASPP"]


class ASPPPooling(nn.Module):
    """Image-level features: global average pooling, 1x1 conv (with bias), ReLU, spread over the map.

    The paper puts BatchNorm after the 1x1 conv; we leave it out. On a 1x1 map BatchNorm
    normalises each channel over the batch alone: in training its output is constant with batch 1
    and a sign with batch 2, so the branch would not learn at the batch sizes of medical
    segmentation.

    Args:
        in_channels: input width.
        out_channels: output width.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.relu = nn.ReLU()

    def execute(self, x):
        n, _, h, w = x.shape
        pooled = self.relu(self.conv(x.mean(dims=[2, 3], keepdims=True)))
        # Bilinear upsampling of a 1x1 map is this constant broadcast.
        return pooled.broadcast([n, pooled.shape[1], h, w])


class ASPP(nn.Module):
    """ASPP: parallel 1x1 conv, 3x3 dilated convs and image pooling, concatenated and projected.

    Every conv branch is conv-BN-ReLU with ``out_channels`` filters; the ``len(rates) + 2``
    branches are concatenated and projected by a 1x1 conv-BN-ReLU to ``out_channels``, then
    dropout (0.1 in the authors' code; the paper does not mention it).

    Args:
        in_channels: input width.
        out_channels: width of every branch and of the output (default 256, as in the paper).
        rates: dilations of the 3x3 branches (default 6, 12, 18: the paper's rates at output
            stride 16; doubled at output stride 8).
        dropout: dropout probability after the projection.
    """

    def __init__(self, in_channels, out_channels=256, rates=(6, 12, 18), dropout=0.1):
        super().__init__()
        self.rates = tuple(rates)
        if not all(type(r) is int and r > 0 for r in self.rates):
            raise ModelZooError(f"ASPP: rates must be positive integers, got {rates!r}")
        self.branches = nn.ModuleList([ConvBNReLU(in_channels, out_channels, 1)] +
                                      [ConvBNReLU(in_channels, out_channels, 3, dilation=r) for r in self.rates])
        self.pooling = ASPPPooling(in_channels, out_channels)
        self.project = nn.Sequential(ConvBNReLU((len(self.rates) + 2) * out_channels, out_channels, 1),
                                     nn.Dropout(dropout))

    def execute(self, x):
        return self.project(jt.concat([branch(x) for branch in self.branches] + [self.pooling(x)], dim=1))
