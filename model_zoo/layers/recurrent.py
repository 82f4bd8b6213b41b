"""Recurrent (residual) convolution units of RU-Net / R2U-Net (Alom et al., 2018, https://arxiv.org/abs/1802.06955)."""
from ..backend import jt
from ..registry import ModelZooError
from .conv import ConvBNReLU

nn = jt.nn

__all__ = ["RecurrentConv", "RecurrentResidualBlock"]


class RecurrentConv(nn.Module):
    """Recurrent convolutional layer unrolled for ``steps`` time steps around one 3x3 ConvBNReLU ``f``.

    ``h(0) = f(x)`` and ``h(k) = f(x + h(k-1))`` for ``k = 1..steps``; returns ``h(steps)``. The
    feed-forward and recurrent inputs share ``f``'s weights, so the layer has the parameters of a
    single convolution whatever ``steps`` (``steps=0`` is a plain ConvBNReLU).

    Args:
        channels: input and output channels.
        steps: recurrent time steps ``t`` (R2U-Net uses 2).
    """

    def __init__(self, channels, steps=2):
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ModelZooError(f"recurrent steps must be a non-negative integer, got {steps!r}")
        self.steps = steps
        self.conv = ConvBNReLU(channels, channels)

    def execute(self, x):
        h = self.conv(x)
        for _ in range(self.steps):
            h = self.conv(x + h)
        return h


class RecurrentResidualBlock(nn.Module):
    """R2U-Net's recurrent residual unit: 1x1 conv to ``out_channels``, then two RecurrentConv
    layers with an identity shortcut around them (``y = p + RCL(RCL(p))`` with ``p = conv1x1(x)``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        steps: recurrent time steps of each RecurrentConv.
    """

    def __init__(self, in_channels, out_channels, steps=2):
        super().__init__()
        self.project = nn.Conv2d(in_channels, out_channels, 1)
        self.body = nn.Sequential(RecurrentConv(out_channels, steps), RecurrentConv(out_channels, steps))

    def execute(self, x):
        x = self.project(x)
        return x + self.body(x)
