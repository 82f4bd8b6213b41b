"""EANet (Guo, Liu, Mu and Hu, 2021, "Beyond Self-attention: External Attention using Two Linear
Layers for Visual Tasks", https://arxiv.org/abs/2105.02358; reference code
github.com/MenghaoGuo/EANet, ``model_torch.py`` with ``settings.py``).

The paper's segmentation network: a dilated ResNet-101 at output stride 8, a 3x3 conv-BN-ReLU to
512 channels, one external attention block (64 memory slots, see
``model_zoo.layers.ExternalAttention``), a 3x3 conv-BN-ReLU to 256 channels, channel dropout
(p 0.1) and a 1x1 classifier. The reference trains it with a single loss (no auxiliary head).

Differences from the reference code: torchvision's ResNet (7x7 stem conv) where the reference uses
the "deep stem" of three 3x3 convs, and no multi-grid (the 3x3 convs of the last stage have
dilations 2, 4, 4 where the reference's multi-grid gives 2, 8, 16); outputs are upsampled
bilinearly with ``align_corners=False`` (reference: True).
"""
from .backbones import dilated_resnet
from .backend import jt
from .base import SegmentationModel
from .layers import ConvBNReLU, ExternalAttention
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["EANet"]



class EANet(SegmentationModel):
    """EANet: dilated ResNet (output stride 8) with an external attention head.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet101"`` as in the paper's
            segmentation experiments), dilated to output stride 8.
        head_channels: width of the external attention block (default 512 as in the reference; the
            layer before the classifier has half of it; at least 2).
        memory_size: number of external memory slots ``S`` (default 64 as in the paper).
        dropout: channel-dropout probability before the classifier (default 0.1).

    Returns logits ``N x num_classes x H x W``. Inputs are padded internally to a multiple of 8.
    External attention has no inline matrix products (its memories are 1x1 convs), so
    ``count_flops`` covers it entirely.
    """

    size_divisor = 8
    detail_stride = 8
    min_input_size = 32

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet101", head_channels=512, memory_size=64,
                 dropout=0.1):
        super().__init__()
        if head_channels < 2:
            raise ModelZooError(f"EANet: head_channels must be at least 2, got {head_channels}")
        self.encoder = dilated_resnet("EANet", encoder, in_channels, 8)
        self.reduce = ConvBNReLU(self.encoder.channels[-1], head_channels)
        self.attention = ExternalAttention(head_channels, memory_size)
        self.project = ConvBNReLU(head_channels, head_channels // 2)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(head_channels // 2, num_classes, 1))

    def forward_logits(self, x):
        y = self.classifier(self.project(self.attention(self.reduce(self.encoder(x)[-1]))))
        return nn.interpolate(y, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)


@register_model(tiny={"encoder": "resnet18", "head_channels": 16, "memory_size": 8})
def eanet(in_channels=3, num_classes=2, encoder="resnet101", head_channels=512, memory_size=64, dropout=0.1):
    """EANet as in the paper's segmentation experiments: dilated ResNet-101, S = 64."""
    return EANet(in_channels, num_classes, encoder, head_channels, memory_size, dropout)


@register_model(tiny={"head_channels": 16, "memory_size": 8})
def eanet_r18(in_channels=3, num_classes=2, encoder="resnet18", head_channels=128, memory_size=64, dropout=0.1):
    """Light EANet: dilated ResNet-18, 128-wide head, S = 64."""
    return EANet(in_channels, num_classes, encoder, head_channels, memory_size, dropout)
