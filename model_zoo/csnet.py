"""CS-Net: channel and spatial self-attention at the bottleneck of a residual UNet.

Mou, Zhao, Chen, Cheng, Gu, Hao, Qi, Zheng, Frangi and Liu, "CS-Net: Channel and Spatial Attention
Network for Curvilinear Structure Segmentation", MICCAI 2019,
https://doi.org/10.1007/978-3-030-32239-7_80 (reference code: github.com/iMED-Lab/CS-Net).

Encoder: five residual blocks (two 3x3 conv-BN-ReLU plus a 1x1 projection shortcut) of widths
``base_channels * (1, 2, 4, 8, 16)`` separated by 2x2 max-pools. At the 1/16 bottleneck, a spatial
attention block (DANet-style position attention whose query and key are 1x3 and 3x1 convs, to
follow elongated structures) and a channel attention block run side by side; their outputs are
summed and added to the bottleneck features. Decoder: 2x2 stride-2 transposed conv, concatenated
skip, double conv, four times; then a 1x1 head.

As in the reference code, each attention block's residual scale ``gamma`` starts at 0 (so the
attention path starts as the identity and the 1x3/3x1/1x1 convs of the spatial block receive
gradient only once ``gamma`` has moved), and the bottleneck therefore starts as ``3 * x``
(``x + (x + gamma_s * spatial) + (x + gamma_c * channel)``). Differences from the reference code:
convolutions followed by BatchNorm have no bias (BatchNorm absorbs it), its unused
``attention_fuse`` conv is left out, and the head returns logits (no sigmoid).
"""
import math

from .backend import jt
from .base import SegmentationModel
from .layers import ChannelAttention, ConvBNReLU, PooledEncoder, UpConcat
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["CSNet", "CSNetEncoder", "ResidualBlock", "SpatialAttention"]


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN-ReLU layers plus a 1x1 conv shortcut, summed, then ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.body = nn.Sequential(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def execute(self, x):
        return nn.relu(self.body(x) + self.shortcut(x))


class SpatialAttention(nn.Module):
    """Spatial self-attention: every pixel is a softmax-weighted sum of all pixels' values.

    ``out = x + gamma * V A^T`` with ``A = softmax_j(Q_i . K_j)`` over the ``N = H * W`` pixels,
    query = 1x3 conv-BN-ReLU and key = 3x1 conv-BN-ReLU to ``channels // 8`` channels, value = 1x1
    conv. ``gamma`` is a learned scalar, initially ``gamma_init``.
    """

    def __init__(self, channels, gamma_init=0.0):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Sequential(nn.Conv2d(channels, inner, (1, 3), padding=(0, 1), bias=False),
                                   nn.BatchNorm2d(inner), nn.ReLU())
        self.key = nn.Sequential(nn.Conv2d(channels, inner, (3, 1), padding=(1, 0), bias=False),
                                 nn.BatchNorm2d(inner), nn.ReLU())
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = jt.full((1,), float(gamma_init))

    def execute(self, x):
        n, c, h, w = x.shape
        query = self.query(x).reshape(n, -1, h * w).transpose(0, 2, 1)   # N x HW x C'
        key = self.key(x).reshape(n, -1, h * w)                          # N x C' x HW
        affinity = nn.softmax(nn.bmm(query, key), dim=2)                 # rows: one query pixel
        value = self.value(x).reshape(n, c, h * w)
        attended = nn.bmm(value, affinity.transpose(0, 2, 1)).reshape(n, c, h, w)
        return x + self.gamma * attended

    @staticmethod
    def matmul_flops(channels, pixels):
        """FLOPs (2 x multiply-adds) of the two matrix products for one image."""
        return 2 * pixels * pixels * (max(1, channels // 8) + channels)


class CSNetEncoder(PooledEncoder):
    """Residual blocks separated by 2x2 max-pools; returns every block's features."""

    def __init__(self, in_channels, widths):
        widths = list(widths)
        super().__init__([ResidualBlock(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[:-1], widths)],
                         widths)


class CSNet(SegmentationModel):
    """CS-Net for 2D (curvilinear structure) segmentation.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: width of the first block (default 32 as in the paper: widths 32..512,
            8.40 M parameters with 2 classes).
        gamma_init: initial value of the two attention blocks' residual scales (default 0, as in
            the reference code; a non-zero value lets the attention convs learn from the first step).

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px; sizes not divisible
    by 16 are padded internally and cropped back. The attention costs ``O((HW/256)^2)`` memory.
    """

    size_divisor = 16
    min_input_size = 32

    def __init__(self, in_channels=3, num_classes=2, base_channels=32, gamma_init=0.0):
        super().__init__()
        if base_channels < 1:
            raise ModelZooError(f"CSNet: base_channels must be positive, got {base_channels}")
        widths = [base_channels * 2 ** i for i in range(5)]
        self.encoder = CSNetEncoder(in_channels, widths)
        self.spatial_attention = SpatialAttention(widths[-1], gamma_init)
        self.channel_attention = ChannelAttention(gamma_init)
        self.decoder = nn.ModuleList([UpConcat(widths[i + 1], widths[i], widths[i]) for i in reversed(range(4))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward_logits(self, x):
        features = self.encoder(x)
        bottleneck = features[-1]
        y = bottleneck + self.spatial_attention(bottleneck) + self.channel_attention(bottleneck)
        for up, skip in zip(self.decoder, reversed(features[:-1])):
            y = up(y, skip)
        return self.head(y)

    def extra_flops(self, input_shape):
        """FLOPs of the attention matrix products (not modules, so not seen by ``count_flops``).

        Args:
            input_shape: ``(N, C, H, W)`` of the input before padding.
        """
        n, _, h, w = input_shape
        pixels = math.ceil(h / self.size_divisor) * math.ceil(w / self.size_divisor)
        channels = self.encoder.widths[-1]
        return n * (SpatialAttention.matmul_flops(channels, pixels) + ChannelAttention.matmul_flops(channels, pixels))


@register_model(tiny={"base_channels": 8, "gamma_init": 0.1})
def csnet(in_channels=3, num_classes=2, base_channels=32, gamma_init=0.0):
    """CS-Net at the paper's widths (base 32). The tiny test configuration starts ``gamma`` at
    0.1 so that the registry-wide tests see a gradient on every attention conv."""
    return CSNet(in_channels, num_classes, base_channels, gamma_init)
