"""Additive attention gate of Attention U-Net (Oktay et al., 2018, https://arxiv.org/abs/1804.03999)."""
from ..backend import jt

nn = jt.nn

__all__ = ["AttentionGate"]


class AttentionGate(nn.Module):
    """Scale skip features ``x`` by attention coefficients computed with a coarser gating signal ``g``.

    ``alpha = sigmoid(psi(relu(W_x(x) + W_g(g))))`` is computed on the gating signal's grid and
    resampled bilinearly to ``x``; the gate returns ``alpha * x`` (the paper's Eq. 1-2). ``W_x`` is a
    2x2 stride-2 convolution without bias, so it also brings ``x`` down to the grid of a gating
    signal one level coarser; ``W_g`` and ``psi`` are 1x1 convolutions with bias.

    Args:
        in_channels: channels of the skip features ``x``.
        gating_channels: channels of the gating signal ``g``.
        inter_channels: channels of the joint space ``W_x(x) + W_g(g)`` (default
            ``in_channels // 2``, at least 1).

    Shapes: ``x`` is ``N x in_channels x H x W``; ``g`` is ``N x gating_channels x h x w``, normally
    ``h, w = H // 2, W // 2`` (any other size is resized to that grid). The output has ``x``'s shape.
    """

    def __init__(self, in_channels, gating_channels, inter_channels=None):
        super().__init__()
        inter_channels = inter_channels or max(1, in_channels // 2)
        self.theta = nn.Conv2d(in_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gating_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def coefficients(self, x, g):
        """Attention coefficients ``N x 1 x H x W`` in (0, 1) for skip features ``x`` and gating signal ``g``."""
        theta_x = self.theta(x)
        phi_g = self.phi(g)
        if tuple(phi_g.shape[2:]) != tuple(theta_x.shape[2:]):
            phi_g = nn.interpolate(phi_g, size=tuple(theta_x.shape[2:]), mode="bilinear", align_corners=False)
        alpha = jt.sigmoid(self.psi(nn.relu(theta_x + phi_g)))
        return nn.interpolate(alpha, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)

    def execute(self, x, g):
        return x * self.coefficients(x, g)
