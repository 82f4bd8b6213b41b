"""PSPNet (Zhao et al., 2017, "Pyramid Scene Parsing Network", CVPR,
https://arxiv.org/abs/1612.01105).

A dilated ResNet at output stride 8, the pyramid pooling module (bins 1, 2, 3, 6, each reduced to
1/4 of the backbone width; see ``model_zoo.layers.PyramidPooling``), a 3x3 conv-BN-ReLU to 512,
dropout and a 1x1 classifier, upsampled x8. Training adds an auxiliary FCN head on ``layer3``
whose loss the paper weights 0.4. Head widths and dropout follow the authors' code
(hszhao/semseg). The backbone is torchvision's ResNet (7x7 stem) where the authors' has a deep stem
of three 3x3 convs.
"""
from .backbones import dilated_resnet
from .backend import jt
from .base import SegmentationModel
from .layers import FCNHead, PyramidPooling
from .registry import register_model

nn = jt.nn

__all__ = ["PSPNet"]


class PSPNet(SegmentationModel):
    """PSPNet: dilated ResNet (output stride 8), pyramid pooling, FCN head; auxiliary head on layer3.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet50"``, as in the paper's
            main experiments).
        bins: pyramid pooling sizes (default 1, 2, 3, 6).
        head_channels: width of the 3x3 conv after pyramid pooling (default 512).
        aux_head: add the auxiliary FCN head on ``layer3`` (default True, as the paper trains).
            In training mode the model then returns ``[main, aux]``; the paper weights the
            auxiliary loss 0.4, so train with ``train.aux_weights: [0.4]``.
        aux_channels: width of the auxiliary head's 3x3 conv (default 256).
        dropout: channel dropout before both classifiers (default 0.1).

    Returns logits ``N x num_classes x H x W`` (bilinear upsampling, ``align_corners=False``);
    inputs are padded internally to a multiple of 8. Eval mode returns the main logits only.
    """

    size_divisor = 8
    detail_stride = 8

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet50", bins=(1, 2, 3, 6), head_channels=512,
                 aux_head=True, aux_channels=256, dropout=0.1):
        super().__init__()
        self.encoder = dilated_resnet("PSPNet", encoder, in_channels, 8)
        widths = self.encoder.channels
        self.ppm = PyramidPooling(widths[4], bins)
        self.head = FCNHead(self.ppm.out_channels, head_channels, num_classes, dropout)
        self.aux_head = FCNHead(widths[3], aux_channels, num_classes, dropout) if aux_head else None

    def forward_logits(self, x):
        features = self.encoder(x)
        size = (x.shape[2], x.shape[3])
        main = nn.interpolate(self.head(self.ppm(features[4])), size=size, mode="bilinear", align_corners=False)
        if self.aux_head is None or not self.is_training():
            return main
        aux = nn.interpolate(self.aux_head(features[3]), size=size, mode="bilinear", align_corners=False)
        return [main, aux]


# The narrow test configurations leave the auxiliary head out: the registry-wide train/eval test
# differentiates the main output only. tests/test_deeplab_pspnet.py covers the auxiliary head.
@register_model(tiny={"encoder": "resnet18", "head_channels": 16, "aux_head": False})
def pspnet(in_channels=3, num_classes=2, encoder="resnet50", bins=(1, 2, 3, 6), head_channels=512, aux_head=True,
           aux_channels=256, dropout=0.1):
    """PSPNet on a dilated ResNet-50 with the auxiliary head (loss weight 0.4), as in the paper."""
    return PSPNet(in_channels, num_classes, encoder, bins, head_channels, aux_head, aux_channels, dropout)


@register_model(tiny={"head_channels": 16, "aux_head": False})
def pspnet_r18(in_channels=3, num_classes=2, bins=(1, 2, 3, 6), head_channels=128, aux_head=True, aux_channels=64,
               dropout=0.1):
    """Light PSPNet: dilated ResNet-18, head 128 and auxiliary head 64 wide (mmsegmentation's R-18 widths)."""
    return PSPNet(in_channels, num_classes, "resnet18", bins, head_channels, aux_head, aux_channels, dropout)
