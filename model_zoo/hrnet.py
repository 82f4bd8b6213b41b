"""HRNetV2 for semantic segmentation: Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu
and Xiao, 2019, "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI 2020,
https://arxiv.org/abs/1908.07919 (reference code: github.com/HRNet/HRNet-Semantic-Segmentation).

The HRNet backbone (``model_zoo.backbones.hrnet``) keeps four parallel branches at strides 4, 8,
16 and 32. HRNetV2's head upsamples all four to the stride-4 branch (bilinear), concatenates them
(``15 C`` channels: 720 for W48), mixes them with a 1x1 conv-BN-ReLU and classifies with a 1x1
conv; the logits are upsampled (bilinear) to the input. Difference from the reference code: the
1x1 conv before BatchNorm has no bias (BatchNorm's shift makes it redundant; 720 parameters at W48).
"""
from .backbones.hrnet import create_hrnet, hrnetv2_representation
from .backend import jt
from .base import SegmentationModel
from .layers import ConvBNReLU
from .registry import register_model

nn = jt.nn

__all__ = ["HRNetV2"]


class HRNetV2(SegmentationModel):
    """HRNetV2 segmentation network: HRNet backbone, all resolutions concatenated, 1x1 head.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        backbone: an HRNet configuration from ``model_zoo.backbones.hrnet.HRNET_CONFIGS``
            (default ``"hrnet_w48"``; also ``"hrnet_w18"``, ``"hrnet_w18_small_v2"``,
            ``"hrnet_w18_small_v1"``).
        width: replaces the backbone's branch width ``C`` (None: the configuration's; small values
            give narrow test networks).

    Returns logits ``N x num_classes x H x W``; inputs are padded internally to a multiple of 32
    so the four branches tile exactly. HRNetV2-W48 has 65.9 M parameters at 19 classes in the
    paper (Cityscapes), ours 720 fewer (no bias before BatchNorm).
    """

    size_divisor = 32
    detail_stride = 4

    def __init__(self, in_channels=3, num_classes=2, backbone="hrnet_w48", width=None):
        super().__init__()
        self.encoder = create_hrnet(backbone, in_channels, width)
        channels = sum(self.encoder.channels)
        self.head = nn.Sequential(ConvBNReLU(channels, channels, 1), nn.Conv2d(channels, num_classes, 1))

    def forward_logits(self, x):
        logits = self.head(hrnetv2_representation(self.encoder(x)))
        return nn.interpolate(logits, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)


@register_model(tiny={"backbone": "hrnet_w18_small_v1", "width": 4})
def hrnet(in_channels=3, num_classes=2, backbone="hrnet_w48", width=None):
    """HRNetV2-W48, the paper's segmentation configuration."""
    return HRNetV2(in_channels, num_classes, backbone, width)


@register_model(tiny={"backbone": "hrnet_w18_small_v1", "width": 4})
def hrnet_w18(in_channels=3, num_classes=2, backbone="hrnet_w18", width=None):
    """Light HRNetV2: the W18 backbone (C=18, 270 concatenated channels)."""
    return HRNetV2(in_channels, num_classes, backbone, width)
