"""UNet++: nested UNet with dense skip pathways.

Zhou, Rahman Siddiquee, Tajbakhsh and Liang, "UNet++: A Nested U-Net Architecture for Medical
Image Segmentation", DLMIA 2018, https://arxiv.org/abs/1807.10165; and "UNet++: Redesigning Skip
Connections to Exploit Multiscale Features in Image Segmentation", IEEE TMI 2019,
https://arxiv.org/abs/1912.05074.

Node ``X^{i,j}`` (level ``i``, column ``j``) convolves the concatenation of every earlier node of
its level, ``X^{i,0..j-1}``, with the upsampled ``X^{i+1,j-1}``; ``X^{i,0}`` is the plain encoder.
Widths follow the paper, ``base_channels * (1, 2, 4, 8, 16)`` with base 32, upsampling is a 2x2
stride-2 transposed convolution to the level's width, and every node is a UNet double conv. The
paper's node uses ELU and dropout 0.5 without normalisation; like this project's UNet we use
conv-BatchNorm-ReLU (current practice, and how the TMI version trains it).
"""
from .backend import jt
from .base import SegmentationModel
from .layers import UNetEncoder, UpConcat
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["UNetPlusPlus"]


class UNetPlusPlus(SegmentationModel):
    """UNet++ for 2D segmentation, with optional deep supervision.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: width of level 0 (default 32 as in the paper: 9.05 M parameters).
        depth: number of downsampling levels, the ``L`` of UNet++ L1..L4 (default 4).
        deep_supervision: add a 1x1 head on every top node ``X^{0,1..depth}``. In training mode
            ``forward_logits`` then returns ``[X^{0,depth}, X^{0,1}, ..., X^{0,depth-1}]`` (main
            output first). Eval mode returns the ``X^{0,depth}`` head only — the full network;
            the paper's alternatives (averaging the heads, or pruning to a shallower head) are
            not offered.
        upsampling: ``'transpose'`` (2x2 transposed conv, as in the paper) or ``'bilinear'``.

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px; sizes not divisible
    by ``2**depth`` are padded internally and cropped back.
    """

    def __init__(self, in_channels=3, num_classes=2, base_channels=32, depth=4, deep_supervision=False,
                 upsampling="transpose"):
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ModelZooError(f"UNet++: depth and base_channels must be positive, got {depth}, {base_channels}")
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.deep_supervision = deep_supervision
        self.size_divisor = 2 ** depth
        self.min_input_size = max(32, 2 ** depth)
        self.encoder = UNetEncoder(in_channels, widths)
        # nodes[j - 1][i] is X^{i,j}: it sees j same-level nodes and the upsampled X^{i+1,j-1}.
        self.nodes = nn.ModuleList([
            nn.ModuleList([UpConcat(widths[i + 1], j * widths[i], widths[i], upsampling)
                           for i in range(depth - j + 1)])
            for j in range(1, depth + 1)])
        num_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList([nn.Conv2d(widths[0], num_classes, 1) for _ in range(num_heads)])

    def forward_logits(self, x):
        # grid[i] holds X^{i,0}, X^{i,1}, ... as they are computed, column by column.
        grid = [[feature] for feature in self.encoder(x)]
        for j, column in enumerate(self.nodes, start=1):
            for i, node in enumerate(column):
                grid[i].append(node(grid[i + 1][j - 1], jt.concat(grid[i][:j], dim=1)))
        top = grid[0][1:]
        main = self.heads[-1](top[-1])
        if not (self.deep_supervision and self.is_training()):
            return main
        return [main] + [head(node) for head, node in zip(self.heads[:-1], top[:-1])]


@register_model(tiny={"base_channels": 8})
def unetpp(in_channels=3, num_classes=2, base_channels=32, depth=4, deep_supervision=False,
           upsampling="transpose"):
    """UNet++ L4 at the paper's widths (base 32)."""
    return UNetPlusPlus(in_channels, num_classes, base_channels, depth, deep_supervision, upsampling)
