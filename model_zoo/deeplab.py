"""DeepLab v2 and DeepLab v3+ on dilated ResNets.

* DeepLab v2: Chen et al., 2017, "DeepLab: Semantic Image Segmentation with Deep Convolutional
  Nets, Atrous Convolution, and Fully Connected CRFs", IEEE TPAMI, https://arxiv.org/abs/1606.00915.
  ResNet-101 at output stride 8 and ASPP-L: four parallel 3x3 classifiers of dilation 6, 12, 18
  and 24 whose logits are summed, then bilinear upsampling x8. Not included: the fully connected
  CRF post-processing and the multi-scale input fusion (MSC) the paper adds on top.
* DeepLab v3+: Chen et al., 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic
  Image Segmentation", ECCV, https://arxiv.org/abs/1802.02611. ASPP at output stride 16 (see
  ``model_zoo.layers.ASPP``) and a decoder that projects the stride-4 features to 48 channels,
  concatenates the x4-upsampled ASPP output, applies two 3x3 convs and upsamples x4. The paper's
  best backbone is an aligned Xception with depthwise-separable convolutions; we use the widely
  used ResNet-101 variant (the paper's own ResNet-101 ablation), with plain convolutions.

The backbones are torchvision-layout ResNets (``model_zoo.backbones``), whose layer3/layer4 strides
are replaced by dilation.
"""
from .backbones import dilated_resnet
from .backend import jt
from .base import SegmentationModel
from .layers import ASPP, ConvBNReLU
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["ASPPClassifier", "DeepLabV2", "DeepLabV3Plus"]

class ASPPClassifier(nn.Module):
    """DeepLab v2's ASPP-L head: parallel 3x3 dilated convs straight to class logits, summed.

    Each branch is one conv with bias (the paper's ResNet variant has no fc6/fc7 in the branches),
    initialised from N(0, 0.01) with zero bias as in the authors' Caffe model definition.

    Args:
        in_channels: input width.
        num_classes: output channels (logits).
        rates: dilation of each branch (default 6, 12, 18, 24: ASPP-L).
    """

    def __init__(self, in_channels, num_classes, rates=(6, 12, 18, 24)):
        super().__init__()
        self.rates = tuple(rates)
        if not self.rates or not all(type(r) is int and r > 0 for r in self.rates):
            raise ModelZooError(f"ASPPClassifier: rates must be positive integers, got {rates!r}")
        self.branches = nn.ModuleList([nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r)
                                       for r in self.rates])
        for conv in self.branches:
            jt.init.gauss_(conv.weight, 0.0, 0.01)
            jt.init.zero_(conv.bias)

    def execute(self, x):
        logits = self.branches[0](x)
        for branch in self.branches[1:]:
            logits = logits + branch(x)
        return logits


class DeepLabV2(SegmentationModel):
    """DeepLab v2: dilated ResNet (output stride 8) and the ASPP-L classifier; no CRF.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet101"``, as in the paper).
        rates: ASPP-L dilations (default 6, 12, 18, 24).

    Returns logits ``N x num_classes x H x W`` (the stride-8 logits upsampled bilinearly,
    ``align_corners=False``); inputs are padded internally to a multiple of 8.
    """

    size_divisor = 8
    detail_stride = 8

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet101", rates=(6, 12, 18, 24)):
        super().__init__()
        self.encoder = dilated_resnet("DeepLabV2", encoder, in_channels, 8)
        self.classifier = ASPPClassifier(self.encoder.channels[-1], num_classes, rates)

    def forward_logits(self, x):
        logits = self.classifier(self.encoder(x)[-1])
        return nn.interpolate(logits, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)


class DeepLabV3Plus(SegmentationModel):
    """DeepLab v3+: dilated ResNet, ASPP, and a decoder that refines with stride-4 features.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet101"``).
        output_stride: 16 (default, as the paper trains) or 8; the ASPP rates are 6, 12, 18 at 16
            and doubled at 8.
        aspp_channels: width of the ASPP branches and output (default 256).
        low_level_channels: width the stride-4 (``layer1``) features are projected to (default 48).
        decoder_channels: width of the decoder's two 3x3 convs (default 256).
        dropout: dropout after the ASPP projection (default 0.1).

    Returns logits ``N x num_classes x H x W`` (bilinear upsampling, ``align_corners=False``);
    inputs are padded internally to a multiple of ``output_stride``.
    """

    detail_stride = 4

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet101", output_stride=16, aspp_channels=256,
                 low_level_channels=48, decoder_channels=256, dropout=0.1):
        super().__init__()
        if output_stride not in (8, 16):
            raise ModelZooError(f"DeepLabV3Plus: output_stride must be 8 or 16, got {output_stride!r}")
        self.size_divisor = output_stride
        self.encoder = dilated_resnet("DeepLabV3Plus", encoder, in_channels, output_stride)
        rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
        self.aspp = ASPP(self.encoder.channels[-1], aspp_channels, rates, dropout)
        self.low_level = ConvBNReLU(self.encoder.channels[1], low_level_channels, 1)
        self.decoder = nn.Sequential(ConvBNReLU(aspp_channels + low_level_channels, decoder_channels),
                                     ConvBNReLU(decoder_channels, decoder_channels))
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward_logits(self, x):
        features = self.encoder(x)
        low = self.low_level(features[1])
        context = nn.interpolate(self.aspp(features[-1]), size=(low.shape[2], low.shape[3]), mode="bilinear",
                                 align_corners=False)
        logits = self.classifier(self.decoder(jt.concat([context, low], dim=1)))
        return nn.interpolate(logits, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)


@register_model(tiny={"encoder": "resnet18"})
def deeplabv2(in_channels=3, num_classes=2, encoder="resnet101", rates=(6, 12, 18, 24)):
    """DeepLab v2 (ASPP-L) on a dilated ResNet-101, as in the paper; no CRF."""
    return DeepLabV2(in_channels, num_classes, encoder, rates)


@register_model(tiny={})
def deeplabv2_r18(in_channels=3, num_classes=2, rates=(6, 12, 18, 24)):
    """Light DeepLab v2: ASPP-L on a dilated ResNet-18."""
    return DeepLabV2(in_channels, num_classes, "resnet18", rates)


@register_model(tiny={"encoder": "resnet18", "aspp_channels": 16, "low_level_channels": 8, "decoder_channels": 16})
def deeplabv3plus(in_channels=3, num_classes=2, encoder="resnet101", output_stride=16, aspp_channels=256,
                  low_level_channels=48, decoder_channels=256, dropout=0.1):
    """DeepLab v3+ on a ResNet-101 at output stride 16, with the paper's head widths (256, 48, 256)."""
    return DeepLabV3Plus(in_channels, num_classes, encoder, output_stride, aspp_channels, low_level_channels,
                         decoder_channels, dropout)


@register_model(tiny={"aspp_channels": 16, "low_level_channels": 8, "decoder_channels": 16})
def deeplabv3plus_r18(in_channels=3, num_classes=2, output_stride=16, aspp_channels=128, low_level_channels=48,
                      decoder_channels=128, dropout=0.1):
    """Light DeepLab v3+: ResNet-18 at output stride 16, ASPP and decoder 128 wide."""
    return DeepLabV3Plus(in_channels, num_classes, "resnet18", output_stride, aspp_channels, low_level_channels,
                         decoder_channels, dropout)
