"""CE-Net (Gu et al., 2019, "CE-Net: Context Encoder Network for 2D Medical Image Segmentation",
IEEE TMI, https://arxiv.org/abs/1903.02740).

ResNet-34 encoder, a context extractor of a dense atrous convolution (DAC) block and a residual
multi-kernel pooling (RMP) block at stride 32, and a LinkNet decoder with additive skips. Block
structure, widths and weight sharing follow the authors' code (``CE_Net_``): the DAC branches
share their convs and 1x1 conv, and the RMP levels share one 1x1 conv to a single channel.
"""
from .backbones import create_backbone
from .backend import jt
from .base import SegmentationModel
from .layers import LinkNetDecoder, LinkNetHead
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["DACBlock", "RMPBlock", "CENet"]


class DACBlock(nn.Module):
    """Dense atrous convolution: ``x`` plus four cascaded branches of receptive field 3, 7, 9 and 19.

    The branches are ``r1``, ``1x1(r3)``, ``1x1(r3(r1))`` and ``1x1(r5(r3(r1)))`` with ``rK`` a 3x3
    conv of dilation K, each followed by ReLU; the three dilated convs and the 1x1 conv are shared
    between branches (4 convs in all), and all keep the input width.

    Args:
        channels: input and output width.
    """

    def __init__(self, channels):
        super().__init__()
        self.dilate1 = nn.Conv2d(channels, channels, 3, padding=1, dilation=1)
        self.dilate3 = nn.Conv2d(channels, channels, 3, padding=3, dilation=3)
        self.dilate5 = nn.Conv2d(channels, channels, 3, padding=5, dilation=5)
        self.conv1x1 = nn.Conv2d(channels, channels, 1)
        self.relu = nn.ReLU()
        # Zero biases, as in the reference: the block starts as x + ReLU of bias-free branches.
        for conv in (self.dilate1, self.dilate3, self.dilate5, self.conv1x1):
            jt.init.zero_(conv.bias)

    def execute(self, x):
        d1 = self.dilate1(x)
        d13 = self.dilate3(d1)
        branches = [d1, self.conv1x1(self.dilate3(x)), self.conv1x1(d13), self.conv1x1(self.dilate5(d13))]
        return x + sum(self.relu(b) for b in branches)


class RMPBlock(nn.Module):
    """Residual multi-kernel pooling: ``x`` concatenated with one map per pooling size.

    Each level max-pools ``x`` with a ``k x k`` window and stride ``k``, reduces it to one channel
    with a 1x1 conv shared by all levels, and upsamples it bilinearly (``align_corners=False``) back
    to the input size. Output width: ``channels + len(pool_sizes)``.

    On maps smaller than a window (the stride-32 map of a small input) the window is clipped to the
    map, so that level pools globally; on larger maps it is the reference's floor-mode max-pool.

    Args:
        channels: input width.
        pool_sizes: window sizes (default 2, 3, 5, 6 as in the paper).
    """

    def __init__(self, channels, pool_sizes=(2, 3, 5, 6)):
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        self.conv = nn.Conv2d(channels, 1, 1)

    @staticmethod
    def _max_pool(x, size):
        # Non-overlapping windows as one reshape + max: exact floor-mode pooling, and unlike
        # Jittor's MaxPool2d it accepts a map equal to the window.
        n, c, h, w = x.shape
        kh, kw = min(size, h), min(size, w)
        oh, ow = h // kh, w // kw
        x = x[:, :, :oh * kh, :ow * kw].reshape(n, c, oh, kh, ow, kw)
        return x.max(dims=(3, 5))

    def execute(self, x):
        h, w = x.shape[2], x.shape[3]
        levels = [nn.interpolate(self.conv(self._max_pool(x, k)), size=(h, w), mode="bilinear", align_corners=False)
                  for k in self.pool_sizes]
        return jt.concat(levels + [x], dim=1)


class CENet(SegmentationModel):
    """CE-Net: ResNet encoder, DAC + RMP context extractor, LinkNet decoder.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet34"`` as in the paper).
            The decoder widths follow the encoder's (64, 128, 256 skips for ResNet-18/34).

    Returns logits ``N x num_classes x H x W``; inputs are padded internally to a multiple of 32.
    With ResNet-34 and one class it has 29,003,093 parameters, as the authors' ``CE_Net_``.
    """

    size_divisor = 32

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet34"):
        super().__init__()
        self.encoder = create_backbone(encoder, in_channels)
        if self.encoder.strides != [2, 4, 8, 16, 32]:
            raise ModelZooError(f"CENet: encoder {encoder!r} gives features at strides {self.encoder.strides}; "
                                "a ResNet (strides 2, 4, 8, 16, 32) is needed")
        widths = self.encoder.channels
        self.dac = DACBlock(widths[4])
        self.rmp = RMPBlock(widths[4])
        self.decoder = LinkNetDecoder(widths[4] + len(self.rmp.pool_sizes), widths[1:4])
        self.head = LinkNetHead(widths[1], num_classes)

    def forward_logits(self, x):
        _, e1, e2, e3, e4 = self.encoder(x)
        center = self.rmp(self.dac(e4))
        return self.head(self.decoder(center, [e1, e2, e3]))


@register_model(tiny={"encoder": "resnet18"})
def cenet(in_channels=3, num_classes=2, encoder="resnet34"):
    """CE-Net with a ResNet-34 encoder, as in the paper."""
    return CENet(in_channels, num_classes, encoder)
