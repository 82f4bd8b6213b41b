"""OCNet (Yuan and Wang, 2018, "OCNet: Object Context Network for Scene Parsing",
https://arxiv.org/abs/1809.00916; reference code github.com/openseg-group/OCNet.pytorch).

A dilated ResNet (output stride 8) is followed by a 3x3 conv-BN-ReLU to 512 channels and an object
context module; a 1x1 conv classifies. The object context of a pixel is the mean of all pixels'
values weighted by their similarity to it (self-attention), i.e. mostly pixels of the same object.
Two modules of the paper are implemented:

* Base-OC: object context concatenated with the input features, fused by a 1x1 conv;
* ASP-OC (the paper's best, and the default here): an ASPP-like pyramid whose image-pooling
  branch is replaced by object context — five parallel branches (object context, 1x1 conv, three
  3x3 convs of dilation 12, 24 and 36) concatenated and fused by a 1x1 conv.

Training adds an FCN auxiliary head on ``layer3`` (3x3 conv-BN-ReLU, dropout, 1x1 conv) whose loss
the reference weights 0.4.

Differences from the reference code: torchvision's ResNet (7x7 stem conv) where the reference uses
the "deep stem" of three 3x3 convs; InPlace-ABN's leaky ReLU (slope 0.01) is a ReLU here; convs
followed by BatchNorm have no bias; outputs are upsampled bilinearly with ``align_corners=False``
(the object-context upsampling keeps the reference's ``align_corners=True``).
"""
import math

from .backbones import dilated_resnet
from .backend import jt
from .base import SegmentationModel
from .layers import ConvBNReLU, FCNHead
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["ObjectContextBlock", "BaseOC", "ASPOC", "OCNet"]



class ObjectContextBlock(nn.Module):
    """Object context (self-attention): each pixel gathers the values of the pixels similar to it.

    ``context = W(V S^T)`` with ``S_ij = softmax_j(Q_i . K_j / sqrt(d))`` over the pixels, where
    query and key are the same 1x1 conv-BN-ReLU to ``d = key_channels`` (shared, as in the
    reference), ``V`` a 1x1 conv to ``value_channels`` and ``W`` a 1x1 conv to ``out_channels``.
    With ``scale > 1`` the attention runs on the ``scale x scale`` max-pooled map (floor mode) and
    the context is upsampled bilinearly (``align_corners=True``) back to the input size.

    Args:
        in_channels: input width.
        key_channels: query/key width ``d``.
        value_channels: value width.
        out_channels: output width.
        scale: max-pooling factor before the attention (1: none).
        zero_init: start ``W`` (weight and bias) at zero as the reference does, so the block
            starts with a zero context; its query/key/value convs then get no gradient until ``W``
            has moved.

    Returns the context only, ``N x out_channels x H x W`` (not added to the input).
    """

    def __init__(self, in_channels, key_channels, value_channels, out_channels, scale=1, zero_init=True):
        super().__init__()
        if scale < 1:
            raise ModelZooError(f"ObjectContextBlock: scale must be at least 1, got {scale}")
        self.scale = scale
        self.key_channels = key_channels
        self.pool = nn.MaxPool2d(scale, stride=scale) if scale > 1 else None
        self.query_key = ConvBNReLU(in_channels, key_channels, 1)
        self.value = nn.Conv2d(in_channels, value_channels, 1)
        self.out = nn.Conv2d(value_channels, out_channels, 1)
        if zero_init:
            jt.init.zero_(self.out.weight)
            jt.init.zero_(self.out.bias)

    def execute(self, x):
        h, w = x.shape[2], x.shape[3]
        if self.pool is not None:
            x = self.pool(x)
        n, _, ph, pw = x.shape
        query_key = self.query_key(x).reshape(n, self.key_channels, ph * pw)
        similarity = nn.bmm(query_key.transpose(0, 2, 1), query_key) * self.key_channels ** -0.5
        similarity = nn.softmax(similarity, dim=2)                            # N x HW x HW, rows: queries
        value = self.value(x).reshape(n, -1, ph * pw)
        context = self.out(nn.bmm(value, similarity.transpose(0, 2, 1)).reshape(n, -1, ph, pw))
        if self.pool is not None:
            context = nn.interpolate(context, size=(h, w), mode="bilinear", align_corners=True)
        return context

    def matmul_flops(self, height, width):
        """FLOPs (2 x multiply-adds) of the two matrix products for one ``height x width`` input."""
        pixels = (height // self.scale) * (width // self.scale)
        return 2 * pixels * pixels * (self.key_channels + self.value.out_channels)


class BaseOC(nn.Module):
    """Base-OC module: ``fuse(concat(object_context(x), x))``.

    The object context keeps the input width (key and value ``channels // 2`` as in the reference
    for 512 channels); ``fuse`` is a 1x1 conv-BN-ReLU from ``2 * channels`` to ``channels`` and
    channel dropout (p 0.05).

    Args:
        channels: input and output width.
        zero_init: see ``ObjectContextBlock``.
    """

    def __init__(self, channels, zero_init=True):
        super().__init__()
        self.context = ObjectContextBlock(channels, channels // 2, channels // 2, channels, zero_init=zero_init)
        self.fuse = nn.Sequential(ConvBNReLU(2 * channels, channels, 1), nn.Dropout2d(0.05))
        self.out_channels = channels

    def execute(self, x):
        return self.fuse(jt.concat([self.context(x), x], dim=1))


class ASPOC(nn.Module):
    """ASP-OC module: ASPP with object context in place of image pooling.

    Five parallel branches of width ``channels`` on the input, concatenated and fused by a 1x1
    conv-BN-ReLU to ``2 * channels`` and channel dropout (p 0.1):

    * object context: 3x3 conv-BN-ReLU, object context on the 2x2 max-pooled map (key
      ``channels // 2``, value ``channels``), 1x1 conv-BN-ReLU;
    * a 1x1 conv-BN-ReLU;
    * three 3x3 conv-BN-ReLU of dilation ``dilations`` (12, 24, 36 at output stride 8).

    Args:
        in_channels: input width.
        channels: branch width (the reference uses 256 on 512 input channels).
        dilations: the three atrous rates.
        zero_init: see ``ObjectContextBlock``.

    Returns ``N x 2*channels x H x W``.
    """

    def __init__(self, in_channels, channels, dilations=(12, 24, 36), zero_init=True):
        super().__init__()
        self.context = nn.Sequential(
            ConvBNReLU(in_channels, channels),
            ObjectContextBlock(channels, channels // 2, channels, channels, scale=2, zero_init=zero_init),
            ConvBNReLU(channels, channels, 1))
        self.branches = nn.ModuleList([ConvBNReLU(in_channels, channels, 1)] +
                                      [ConvBNReLU(in_channels, channels, dilation=d) for d in dilations])
        self.fuse = nn.Sequential(ConvBNReLU((len(dilations) + 2) * channels, 2 * channels, 1), nn.Dropout2d(0.1))
        self.out_channels = 2 * channels

    def execute(self, x):
        return self.fuse(jt.concat([self.context(x)] + [branch(x) for branch in self.branches], dim=1))


class OCNet(SegmentationModel):
    """OCNet: dilated ResNet (output stride 8), object context module, 1x1 classifier.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet101"`` as in the paper),
            dilated to output stride 8.
        context: ``"asp"`` (ASP-OC, default, the paper's best) or ``"base"`` (Base-OC).
        head_channels: width after the 3x3 reduction conv and of the context module's output
            (default 512 as in the reference; ASP-OC branches are half as wide; at least 4).
        aux_head: FCN auxiliary head on ``layer3`` (default True, as the reference trains). In
            training mode ``forward_logits`` then returns ``[main, aux]``; the reference weights the
            auxiliary loss 0.4, so set ``train.aux_weights: [0.4]``.
        zero_init: start the object context's output conv at zero as the reference does (default
            True; the narrow test configuration uses False so every conv gets a gradient at once).

    Returns logits ``N x num_classes x H x W`` (eval mode: the main output only). Inputs are padded
    internally to a multiple of 8.
    """

    size_divisor = 8
    detail_stride = 8
    min_input_size = 32

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet101", context="asp", head_channels=512,
                 aux_head=True, zero_init=True):
        super().__init__()
        if context not in ("asp", "base"):
            raise ModelZooError(f"OCNet: context must be 'asp' or 'base', got {context!r}")
        if head_channels < 4:
            raise ModelZooError(f"OCNet: head_channels must be at least 4, got {head_channels}")
        self.encoder = dilated_resnet("OCNet", encoder, in_channels, 8)
        widths = self.encoder.channels
        self.reduce = ConvBNReLU(widths[4], head_channels)
        if context == "asp":
            self.context = ASPOC(head_channels, head_channels // 2, zero_init=zero_init)
        else:
            self.context = BaseOC(head_channels, zero_init=zero_init)
        self.classifier = nn.Conv2d(self.context.out_channels, num_classes, 1)
        self.aux_head = None
        if aux_head:
            # The reference's auxiliary head uses the same dropout as its context module.
            self.aux_head = FCNHead(widths[3], head_channels, num_classes, dropout=0.1 if context == "asp" else 0.05)

    def forward_logits(self, x):
        size = (x.shape[2], x.shape[3])
        features = self.encoder(x)
        outputs = [self.classifier(self.context(self.reduce(features[4])))]
        if self.aux_head is not None and self.is_training():
            outputs.append(self.aux_head(features[3]))
        outputs = [nn.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outputs]
        return outputs if len(outputs) > 1 else outputs[0]

    def extra_flops(self, input_shape):
        """FLOPs of the object context's matrix products (not modules, so not seen by ``count_flops``).

        Args:
            input_shape: ``(N, C, H, W)`` of the input before padding.
        """
        n, _, h, w = input_shape
        block = next(m for m in self.context.modules() if isinstance(m, ObjectContextBlock))
        return n * block.matmul_flops(math.ceil(h / self.size_divisor), math.ceil(w / self.size_divisor))


# The narrow test configurations start the object context's output conv at random (at zero its
# query/key/value convs get no gradient on the first step) and leave the auxiliary head out: the
# registry-wide tests require a gradient on every parameter from the main output alone.
# tests/test_attention_nets.py covers the auxiliary head.
@register_model(tiny={"encoder": "resnet18", "head_channels": 16, "zero_init": False, "aux_head": False})
def ocnet(in_channels=3, num_classes=2, encoder="resnet101", context="asp", head_channels=512, aux_head=True,
          zero_init=True):
    """OCNet as in the paper: dilated ResNet-101 with ASP-OC and the auxiliary head."""
    return OCNet(in_channels, num_classes, encoder, context, head_channels, aux_head, zero_init)


@register_model(tiny={"head_channels": 16, "zero_init": False, "aux_head": False})
def ocnet_r18(in_channels=3, num_classes=2, encoder="resnet18", context="asp", head_channels=128, aux_head=True,
              zero_init=True):
    """Light OCNet: dilated ResNet-18, ASP-OC with 128-wide head (64-wide branches)."""
    return OCNet(in_channels, num_classes, encoder, context, head_channels, aux_head, zero_init)
