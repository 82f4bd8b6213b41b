"""External attention (Guo, Liu, Mu and Hu, 2021, "Beyond Self-attention: External Attention using
Two Linear Layers for Visual Tasks", https://arxiv.org/abs/2105.02358).

Instead of attending to the other pixels of the same image (cost quadratic in the number of
pixels), every pixel attends to ``S`` learned memory slots shared by the whole dataset (cost linear
in the number of pixels).
"""
from ..backend import jt
from ..registry import ModelZooError

nn = jt.nn

__all__ = ["ExternalAttention"]


class ExternalAttention(nn.Module):
    """External attention block with the paper's double normalisation, as a residual unit.

    With ``F = conv_in(x)`` (1x1 conv with bias) seen as ``C x HW``, the block computes

    * ``A = M_k F`` (``S x HW``): one affinity per memory slot and pixel;
    * softmax over the ``HW`` pixels (each slot's row sums to 1), then each pixel's column divided
      by its sum over the ``S`` slots (plus 1e-9) — the paper's "double normalisation";
    * ``out = ReLU(x + norm(conv_out(M_v A)))`` with ``M_v`` (``C x S``) and ``conv_out`` a 1x1
      conv without bias.

    The memories ``M_k`` and ``M_v`` are 1x1 convolutions without bias (so ``count_flops`` counts
    their ``2 * HW * C * S`` multiply-adds each). As in the reference code, ``M_v`` starts as the
    transpose of ``M_k``, both drawn from ``N(0, 2 / C)``; they are independent parameters
    afterwards, as the paper describes two memories.

    Args:
        channels: input and output width ``C``.
        memory_size: number of memory slots ``S`` (default 64, the paper's segmentation setting).
        norm_layer: builds the normalisation after ``conv_out`` from a width (default
            ``nn.BatchNorm2d``, as in the reference code).

    Returns ``N x C x H x W``, non-negative (it ends with a ReLU).
    """

    def __init__(self, channels, memory_size=64, norm_layer=None):
        super().__init__()
        if channels < 1 or memory_size < 1:
            raise ModelZooError(f"ExternalAttention: channels and memory_size must be positive, "
                                f"got {channels} and {memory_size}")
        self.memory_size = memory_size
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.memory_key = nn.Conv2d(channels, memory_size, 1, bias=False)
        self.memory_value = nn.Conv2d(memory_size, channels, 1, bias=False)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = (norm_layer or nn.BatchNorm2d)(channels)
        self.relu = nn.ReLU()
        for conv in (self.conv_in, self.conv_out):
            jt.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        jt.init.gauss_(self.memory_key.weight, 0.0, (2.0 / channels) ** 0.5)
        self.memory_value.weight.assign(self.memory_key.weight.transpose(1, 0, 2, 3).detach())

    @staticmethod
    def double_normalise(affinity):
        """Softmax over the pixels, then l1-normalise over the memory slots.

        Args:
            affinity: ``N x S x H x W`` memory-pixel affinities.

        Returns the normalised affinities, same shape: every pixel's ``S`` weights sum to 1.
        """
        n, s, h, w = affinity.shape
        weights = nn.softmax(affinity.reshape(n, s, h * w), dim=2)
        weights = weights / (weights.sum(dim=1, keepdims=True) + 1e-9)
        return weights.reshape(n, s, h, w)

    def execute(self, x):
        attention = self.double_normalise(self.memory_key(self.conv_in(x)))
        return self.relu(x + self.norm(self.conv_out(self.memory_value(attention))))
