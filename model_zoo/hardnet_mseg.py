"""HarDNet-MSEG (Huang et al., 2021, "HarDNet-MSEG: A Simple Encoder-Decoder Polyp Segmentation
Neural Network that Achieves over 0.9 Mean Dice and 86 FPS", https://arxiv.org/abs/2101.07172).

A HarDNet-68 encoder (``model_zoo.backbones.hardnet68``) and the cascaded partial decoder of CPD
(Wu et al., 2019, https://arxiv.org/abs/1904.08739) as used by PraNet: the stride-8, 16 and 32
features are each reduced to 32 channels by a receptive field block (RFB), then the partial
decoder fuses them, deepest first, into logits at stride 8, upsampled bilinearly to the input.
Block structure and widths follow the authors' ``HarDMSEG``: the RFB and decoder convs are conv
(no bias) → BatchNorm without ReLU (their ``BasicConv2d``), the decoder's x2 upsampling is bilinear
with ``align_corners=True``. The authors' class also builds a reverse-attention head it never
calls (``ra*_conv*``, ``conv2``..``conv6``); it is left out.

``hardnet_mseg_alt`` is the altered variant of THU-CVlab/JMedSeg (``model/HarDNet_alter.py``): it
also feeds the stride-4 features (the first HarDNet stage, 128 channels) through an RFB and adds a
fourth decoder level, so the logits come at stride 4 (see ``PartialDecoder``). Both JMedSeg classes
also upsample with Jittor's default ``align_corners=False`` inside the decoder; we keep the
authors' ``align_corners=True`` in both variants.
"""
from .backbones import create_backbone
from .backend import jt
from .base import SegmentationModel
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["ConvBN", "ReceptiveFieldBlock", "PartialDecoder", "HarDNetMSEG"]


def _up2(x):
    return nn.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ConvBN(nn.Module):
    """Conv (no bias) → BatchNorm, without activation (the ``BasicConv2d`` of PraNet/HarDNet-MSEG)."""

    def __init__(self, in_channels, out_channels, kernel_size=1, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def execute(self, x):
        return self.bn(self.conv(x))


class ReceptiveFieldBlock(nn.Module):
    """Receptive field block ("RFB_modified" of CPD/PraNet): four branches, a residual 1x1, ReLU.

    Branch 0 is a 1x1 ConvBN; branch ``k`` (k = 1, 2, 3) is a 1x1, a ``1 x (2k+1)``, a
    ``(2k+1) x 1`` and a 3x3 ConvBN of dilation ``2k+1``. The four branches are concatenated and
    fused by a 3x3 ConvBN, added to a 1x1 ConvBN of the input, and passed through a ReLU.

    Args:
        in_channels: input width.
        out_channels: width of every branch and of the output.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        c = out_channels
        self.branch0 = nn.Sequential(ConvBN(in_channels, c, 1))
        for k in (1, 2, 3):
            size = 2 * k + 1
            setattr(self, f"branch{k}", nn.Sequential(
                ConvBN(in_channels, c, 1),
                ConvBN(c, c, (1, size), padding=(0, k)),
                ConvBN(c, c, (size, 1), padding=(k, 0)),
                ConvBN(c, c, 3, padding=size, dilation=size),
            ))
        self.conv_cat = ConvBN(4 * c, c, 3, padding=1)
        self.conv_res = ConvBN(in_channels, c, 1)
        self.relu = nn.ReLU()

    def execute(self, x):
        branches = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return self.relu(self.conv_cat(jt.concat(branches, dim=1)) + self.conv_res(x))


class PartialDecoder(nn.Module):
    """Cascaded partial decoder ("aggregation" of CPD/PraNet/HarDNet-MSEG) to logits.

    Inputs ``x1, x2, x3`` (deepest first, each at twice the resolution of the previous, all ``c``
    channels wide); ``f(.)`` is a 3x3 ConvBN (a different one each time), ``up`` a x2 bilinear
    upsampling and ``[.]`` concatenation::

        x2' = f(up x1) * x2
        x3' = f(up up x1) * f(up x2) * x3
        y2 = f([x2', f(up x1)])     (2c channels)
        y3 = f([x3', f(up y2)])     (3c channels)
        logits = conv1x1(f(y3))

    With ``fine_level=True`` (JMedSeg's altered variant) a fourth, finer input ``x4`` is fused as
    ``y4 = f([x4, f(up y3)])`` (4c channels, ``x4`` not multiplied) and the logits come from
    ``conv1x1(f(y4))`` at ``x4``'s resolution.

    Args:
        channels: width of every input.
        num_classes: output channels (logits).
        fine_level: take a fourth input at twice the resolution of ``x3``.
    """

    def __init__(self, channels, num_classes, fine_level=False):
        super().__init__()
        c = channels
        self.fine_level = fine_level
        self.conv_upsample1 = ConvBN(c, c, 3, padding=1)
        self.conv_upsample2 = ConvBN(c, c, 3, padding=1)
        self.conv_upsample3 = ConvBN(c, c, 3, padding=1)
        self.conv_upsample4 = ConvBN(c, c, 3, padding=1)
        self.conv_upsample5 = ConvBN(2 * c, 2 * c, 3, padding=1)
        self.conv_concat2 = ConvBN(2 * c, 2 * c, 3, padding=1)
        self.conv_concat3 = ConvBN(3 * c, 3 * c, 3, padding=1)
        out_width = 3 * c
        if fine_level:
            self.conv_upsample6 = ConvBN(3 * c, 3 * c, 3, padding=1)
            self.conv_concat4 = ConvBN(4 * c, 4 * c, 3, padding=1)
            out_width = 4 * c
        self.conv4 = ConvBN(out_width, out_width, 3, padding=1)
        self.conv5 = nn.Conv2d(out_width, num_classes, 1)

    def execute(self, x1, x2, x3, x4=None):
        if self.fine_level != (x4 is not None):
            raise ModelZooError(f"PartialDecoder: fine_level={self.fine_level} takes "
                                f"{4 if self.fine_level else 3} inputs")
        up_x1 = _up2(x1)
        x2_gated = self.conv_upsample1(up_x1) * x2
        x3_gated = self.conv_upsample2(_up2(up_x1)) * self.conv_upsample3(_up2(x2)) * x3
        y2 = self.conv_concat2(jt.concat([x2_gated, self.conv_upsample4(up_x1)], dim=1))
        y = self.conv_concat3(jt.concat([x3_gated, self.conv_upsample5(_up2(y2))], dim=1))
        if self.fine_level:
            y = self.conv_concat4(jt.concat([x4, self.conv_upsample6(_up2(y))], dim=1))
        return self.conv5(self.conv4(y))


class HarDNetMSEG(SegmentationModel):
    """HarDNet-MSEG: HarDNet-68 encoder, RFBs and a cascaded partial decoder.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a backbone from ``model_zoo.backbones`` with features at strides 2, 4, 8, 16, 32
            (default ``"hardnet68"`` as in the paper; ResNets also fit).
        decoder_channels: width of the RFB outputs and the decoder (default 32, the paper's).
        fine_level: also decode the stride-4 features (JMedSeg's altered variant, see the module
            docstring); the logits then come at stride 4 instead of 8.

    Returns logits ``N x num_classes x H x W`` (the decoder's stride-8 or stride-4 logits upsampled
    bilinearly, ``align_corners=False``); inputs are padded internally to a multiple of 32. The
    paper trains with a single output (no deep supervision). With HarDNet-68 and one class it has
    17,423,837 parameters: the authors' ``HarDMSEG`` builds 33,343,244, of which 14,894,407 sit in a
    reverse-attention head it never calls and 1,025,000 in the unused ImageNet classifier.
    """

    size_divisor = 32

    def __init__(self, in_channels=3, num_classes=2, encoder="hardnet68", decoder_channels=32, fine_level=False):
        super().__init__()
        if isinstance(decoder_channels, bool) or not isinstance(decoder_channels, int) or decoder_channels < 1:
            raise ModelZooError(f"HarDNetMSEG: decoder_channels must be a positive integer, got {decoder_channels!r}")
        self.encoder = create_backbone(encoder, in_channels)
        if self.encoder.strides != [2, 4, 8, 16, 32]:
            raise ModelZooError(f"HarDNetMSEG: encoder {encoder!r} gives features at strides {self.encoder.strides}; "
                                "one with strides 2, 4, 8, 16, 32 is needed")
        widths = self.encoder.channels
        first = 1 if fine_level else 2
        self.rfbs = nn.ModuleList([ReceptiveFieldBlock(widths[i], decoder_channels) for i in range(first, 5)])
        self.decoder = PartialDecoder(decoder_channels, num_classes, fine_level)
        self.detail_stride = self.encoder.strides[first]

    def forward_logits(self, x):
        features = self.encoder(x)[5 - len(self.rfbs):]
        reduced = [rfb(f) for rfb, f in zip(self.rfbs, features)]
        logits = self.decoder(*reversed(reduced))
        return nn.interpolate(logits, scale_factor=self.detail_stride, mode="bilinear", align_corners=False)


@register_model(tiny={"decoder_channels": 8})
def hardnet_mseg(in_channels=3, num_classes=2, encoder="hardnet68", decoder_channels=32):
    """HarDNet-MSEG as in the paper: HarDNet-68, RFB width 32, stride-8 partial decoder."""
    return HarDNetMSEG(in_channels, num_classes, encoder, decoder_channels)


@register_model(tiny={"decoder_channels": 8})
def hardnet_mseg_alt(in_channels=3, num_classes=2, encoder="hardnet68", decoder_channels=32):
    """JMedSeg's altered HarDNet-MSEG: a fourth RFB + decoder level on the stride-4 features."""
    return HarDNetMSEG(in_channels, num_classes, encoder, decoder_channels, fine_level=True)
