"""D-LinkNet (Zhou et al., 2018, "D-LinkNet: LinkNet with Pretrained Encoder and Dilated Convolution
for High Resolution Satellite Imagery Road Extraction", CVPR Workshops, pp. 182-186,
https://openaccess.thecvf.com/content_cvpr_2018_workshops/w4/html/Zhou_D-LinkNet_LinkNet_With_CVPR_2018_paper.html).

A ResNet-34 encoder, a dilated centre block at stride 32 that sums the outputs of a cascade of
3x3 convs with dilations 1, 2, 4 and 8 (and the identity), and the LinkNet decoder with additive
skips and output head shared with CE-Net (``model_zoo.layers.linknet``). Widths, biases and the
zero bias initialisation of the centre block follow the authors' ``DinkNet34``.
"""
from .backbones import create_backbone
from .backend import jt
from .base import SegmentationModel
from .layers import LinkNetDecoder, LinkNetHead
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["DilatedCenterBlock", "DLinkNet"]


class DilatedCenterBlock(nn.Module):
    """D-LinkNet's centre: ``x + d1 + d2 + ...`` with ``d_k = ReLU(conv_k(d_{k-1}))`` and ``d_0 = x``.

    The convs are 3x3 with biases (zero-initialised, as in the reference) and keep the width;
    conv ``k`` has dilation ``dilations[k]``, so the cascade mode reaches ``sum(dilations)`` pixels
    each side (15 for 1, 2, 4, 8: receptive field 31 at stride 32) while the parallel sum keeps
    every smaller receptive field.

    Args:
        channels: input and output width.
        dilations: dilation of each conv in the cascade (default 1, 2, 4, 8, the paper's; the
            authors' ResNet-50/101 versions add 16).
    """

    def __init__(self, channels, dilations=(1, 2, 4, 8)):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations])
        self.relu = nn.ReLU()
        for conv in self.convs:
            jt.init.zero_(conv.bias)

    def execute(self, x):
        out, y = x, x
        for conv in self.convs:
            y = self.relu(conv(y))
            out = out + y
        return out


class DLinkNet(SegmentationModel):
    """D-LinkNet: ResNet encoder, dilated centre block, LinkNet decoder.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet34"`` as in the paper).
            The decoder widths follow the encoder's (64, 128, 256 skips for ResNet-18/34).
        dilations: dilations of the centre block's cascade (default 1, 2, 4, 8).

    Returns logits ``N x num_classes x H x W``; inputs are padded internally to a multiple of 32.
    With ResNet-34 and one class it has 31,096,129 parameters, as the authors' ``DinkNet34``.
    """

    size_divisor = 32
    detail_stride = 4

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet34", dilations=(1, 2, 4, 8)):
        super().__init__()
        if not isinstance(dilations, (list, tuple)) or not dilations or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dilations):
            raise ModelZooError(f"DLinkNet: dilations must be positive integers, got {dilations!r}")
        self.encoder = create_backbone(encoder, in_channels)
        if self.encoder.strides != [2, 4, 8, 16, 32]:
            raise ModelZooError(f"DLinkNet: encoder {encoder!r} gives features at strides {self.encoder.strides}; "
                                "a ResNet (strides 2, 4, 8, 16, 32) is needed")
        widths = self.encoder.channels
        self.center = DilatedCenterBlock(widths[4], tuple(dilations))
        self.decoder = LinkNetDecoder(widths[4], widths[1:4])
        self.head = LinkNetHead(widths[1], num_classes)

    def forward_logits(self, x):
        _, e1, e2, e3, e4 = self.encoder(x)
        return self.head(self.decoder(self.center(e4), [e1, e2, e3]))


@register_model(tiny={"encoder": "resnet18"})
def dlinknet(in_channels=3, num_classes=2, encoder="resnet34", dilations=(1, 2, 4, 8)):
    """D-LinkNet with a ResNet-34 encoder, as in the paper."""
    return DLinkNet(in_channels, num_classes, encoder, dilations)


@register_model(tiny={"encoder": "resnet18"})
def dlinknet_r18(in_channels=3, num_classes=2, encoder="resnet18", dilations=(1, 2, 4, 8)):
    """D-LinkNet with a ResNet-18 encoder (light variant)."""
    return DLinkNet(in_channels, num_classes, encoder, dilations)
