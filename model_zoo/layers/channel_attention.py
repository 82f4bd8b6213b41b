"""Channel self-attention (DANet's CAM, also CS-Net's channel attention block)."""
from ..backend import jt

nn = jt.nn

__all__ = ["ChannelAttention"]


class ChannelAttention(nn.Module):
    """DANet's channel attention module (CAM): every channel attends to all channels.

    ``out = x + gamma * A X`` with ``X`` the features as ``C x HW``, ``E = X X^T`` and
    ``A_ij = softmax_j(max_k E_ik - E_ij)``. Subtracting from the row maximum is the reference
    code's form (the paper writes ``softmax_j(E_ij)``): it gives the largest weights to the least
    similar channels. No parameters besides ``gamma``.

    Args:
        gamma_init: initial ``gamma`` (0 in the paper: the module starts as the identity).
    """

    def __init__(self, gamma_init=0.0):
        super().__init__()
        self.gamma = jt.full((1,), float(gamma_init))

    def execute(self, x):
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        energy = nn.bmm(flat, flat.transpose(0, 2, 1))                   # N x C x C
        attention = nn.softmax(energy.max(dim=2, keepdims=True) - energy, dim=2)
        attended = nn.bmm(attention, flat).reshape(n, c, h, w)
        return x + self.gamma * attended

    @staticmethod
    def matmul_flops(channels, pixels):
        """FLOPs (2 x multiply-adds) of the two matrix products for one image."""
        return 2 * 2 * channels * channels * pixels
