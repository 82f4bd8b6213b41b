"""Attention U-Net: "Attention U-Net: Learning Where to Look for the Pancreas", Oktay, Schlemper,
Le Folgoc, Lee, Heinrich, Misawa, Mori, McDonagh, Hammerla, Kainz, Glocker and Rueckert, 2018,
https://arxiv.org/abs/1804.03999.

The UNet of ``unet.py`` (same encoder, 2x2 transposed-conv upsampling, widths
``base_channels * (1, 2, 4, 8, 16)``) with an additive attention gate on every skip connection. As
in the paper, the gating signal of each gate is the decoder feature one level coarser than the skip
(the bottleneck for the deepest gate), and the coefficients are computed on that coarser grid, then
resampled bilinearly. The paper's network is 3D; the widths 64..1024 follow the common 2D
re-implementations (e.g. LeeJunHyun/Image_Segmentation's AttU_Net).
"""
from .backend import jt
from .base import SegmentationModel
from .layers import AttentionGate, UNetEncoder, UpConcat
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["AttentionUNet"]


class AttentionUNet(SegmentationModel):
    """UNet with additive attention gates on the skip connections.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        base_channels: width of the first stage (default 64).
        depth: number of downsampling stages (default 4).
        upsampling: ``'transpose'`` (2x2 transposed conv) or ``'bilinear'``.
        deep_supervision: add a 1x1 classifier on each decoder stage but the last; in training mode
            ``forward_logits`` then returns ``[main, aux_1, ..., aux_{depth-1}]``, ordered from the
            finest decoder stage to the coarsest (the paper trains with such side outputs).

    Returns logits ``N x num_classes x H x W`` for any input of at least 32 px (the main output
    only in eval mode).

    Example:
        >>> model = AttentionUNet(in_channels=1, num_classes=2, base_channels=8)
        >>> model(jt.randn(1, 1, 72, 88)).shape
        [1, 2, 72, 88]
    """

    def __init__(self, in_channels=3, num_classes=2, base_channels=64, depth=4, upsampling="transpose",
                 deep_supervision=False):
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ModelZooError(f"AttentionUNet: depth and base_channels must be positive, "
                                f"got {depth}, {base_channels}")
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.size_divisor = 2 ** depth
        # The deepest max-pool needs a map larger than its 2x2 kernel.
        self.min_input_size = max(32, 2 ** (depth + 1))
        self.deep_supervision = deep_supervision
        self.encoder = UNetEncoder(in_channels, widths)
        levels = list(reversed(range(depth)))
        self.gates = nn.ModuleList([AttentionGate(widths[i], widths[i + 1]) for i in levels])
        self.decoder = nn.ModuleList([UpConcat(widths[i + 1], widths[i], widths[i], upsampling) for i in levels])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        if deep_supervision:
            self.aux_heads = nn.ModuleList([nn.Conv2d(widths[i], num_classes, 1) for i in range(1, depth)])

    def forward_logits(self, x):
        features = self.encoder(x)
        y = features[-1]
        stages = []
        for gate, up, skip in zip(self.gates, self.decoder, reversed(features[:-1])):
            y = up(y, gate(skip, y))
            stages.append(y)
        logits = self.head(y)
        if not (self.deep_supervision and self.is_training()):
            return logits
        coarse_to_fine = stages[:-1]
        return [logits] + [head(f) for head, f in zip(self.aux_heads, reversed(coarse_to_fine))]


@register_model(tiny={"base_channels": 8})
def attention_unet(in_channels=3, num_classes=2, base_channels=64, depth=4, upsampling="transpose",
                   deep_supervision=False):
    """Attention U-Net at UNet's widths (base 64)."""
    return AttentionUNet(in_channels, num_classes, base_channels, depth, upsampling, deep_supervision)
