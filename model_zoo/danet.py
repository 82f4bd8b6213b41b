"""DANet (Fu, Liu, Tian, Li, Bao, Fang and Lu, 2019, "Dual Attention Network for Scene
Segmentation", CVPR, https://arxiv.org/abs/1809.02983; reference code github.com/junfu1115/DANet).

A dilated ResNet (output stride 8) feeds the dual attention head: two parallel branches, each a
3x3 conv-BN-ReLU from the backbone's width to a quarter of it, an attention module and another 3x3
conv-BN-ReLU. The position attention module (PAM) makes every pixel a weighted sum of all pixels,
the channel attention module (CAM) every channel a weighted sum of all channels. The two branches
are summed and classified by dropout (p 0.1, whole channels) and a 1x1 conv. For training, the
paper also classifies each branch on its own (same dropout + 1x1 conv) and sums the three
cross-entropy losses with equal weights.

Differences from the reference code: the backbone is torchvision's ResNet (one 7x7 stem conv)
where the reference uses the "deep stem" of three 3x3 convs (123,776 more parameters at
ResNet-101); outputs are upsampled bilinearly with ``align_corners=False`` (reference: True).
"""
import math

from .backbones import dilated_resnet
from .backend import jt
from .base import SegmentationModel
from .layers import ChannelAttention, ConvBNReLU
from .registry import ModelZooError, register_model

nn = jt.nn

__all__ = ["PositionAttention", "DualAttentionHead", "DANet"]



class PositionAttention(nn.Module):
    """DANet's position attention module (PAM): every pixel attends to all pixels.

    ``out = x + gamma * V A^T`` with ``V`` the value map (``C x HW``) and
    ``A_ij = softmax_j(Q_i . K_j)`` over the ``HW`` pixels (row ``i`` holds query pixel ``i``'s
    weights). Query and key are 1x1 convs (with bias) to ``channels // 8``, value a 1x1 conv
    keeping ``channels``; ``gamma`` is a learned scalar.

    Args:
        channels: input and output width (at least 8).
        gamma_init: initial ``gamma`` (0 in the paper: the module starts as the identity, and the
            query/key convs only receive gradient once ``gamma`` has moved).
    """

    def __init__(self, channels, gamma_init=0.0):
        super().__init__()
        if channels < 8:
            raise ModelZooError(f"PositionAttention: channels must be at least 8 (query/key use channels // 8), "
                                f"got {channels}")
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = jt.full((1,), float(gamma_init))

    def execute(self, x):
        n, c, h, w = x.shape
        query = self.query(x).reshape(n, -1, h * w).transpose(0, 2, 1)   # N x HW x C/8
        key = self.key(x).reshape(n, -1, h * w)                          # N x C/8 x HW
        attention = nn.softmax(nn.bmm(query, key), dim=2)                # N x HW x HW
        value = self.value(x).reshape(n, c, h * w)
        attended = nn.bmm(value, attention.transpose(0, 2, 1)).reshape(n, c, h, w)
        return x + self.gamma * attended

    @staticmethod
    def matmul_flops(channels, pixels):
        """FLOPs (2 x multiply-adds) of the two matrix products for one image."""
        return 2 * pixels * pixels * (channels // 8 + channels)


class DualAttentionHead(nn.Module):
    """The two DANet branches: ``3x3 conv-BN-ReLU → PAM/CAM → 3x3 conv-BN-ReLU``.

    Args:
        in_channels: backbone width.
        channels: branch width (the reference uses ``in_channels // 4``).
        gamma_init: initial residual scale of both attention modules.

    Returns the two branch outputs ``(pam, cam)``, each ``N x channels x H x W``.
    """

    def __init__(self, in_channels, channels, gamma_init=0.0):
        super().__init__()
        self.pam_in = ConvBNReLU(in_channels, channels)
        self.pam = PositionAttention(channels, gamma_init)
        self.pam_out = ConvBNReLU(channels, channels)
        self.cam_in = ConvBNReLU(in_channels, channels)
        self.cam = ChannelAttention(gamma_init)
        self.cam_out = ConvBNReLU(channels, channels)

    def execute(self, x):
        return self.pam_out(self.pam(self.pam_in(x))), self.cam_out(self.cam(self.cam_in(x)))


def _classifier(channels, num_classes, dropout):
    return nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


class DANet(SegmentationModel):
    """DANet: dilated ResNet (output stride 8) with position and channel attention, summed.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits; no softmax/sigmoid).
        encoder: a ResNet from ``model_zoo.backbones`` (default ``"resnet101"`` as in the paper),
            dilated to output stride 8.
        head_channels: width of the attention branches (default 512, the reference's
            ``2048 // 4`` for ResNet-50/101; at least 8).
        aux_head: also classify the PAM and CAM branches on their own (default True, as the paper
            trains). In training mode ``forward_logits`` then returns ``[sum, pam, cam]``; the
            paper weights the three losses equally, so set ``train.aux_weights: [1.0, 1.0]``.
        gamma_init: initial residual scale of the attention modules (default 0 as in the paper).
        dropout: channel-dropout probability before each classifier (default 0.1).

    Returns logits ``N x num_classes x H x W`` (eval mode: the summed branches' only). Inputs are
    padded internally to a multiple of 8; the position attention costs ``(HW / 64)^2`` memory per
    image (16.8 M entries at 512x512).
    """

    size_divisor = 8
    detail_stride = 8
    min_input_size = 32

    def __init__(self, in_channels=3, num_classes=2, encoder="resnet101", head_channels=512, aux_head=True,
                 gamma_init=0.0, dropout=0.1):
        super().__init__()
        self.encoder = dilated_resnet("DANet", encoder, in_channels, 8)
        self.head = DualAttentionHead(self.encoder.channels[-1], head_channels, gamma_init)
        self.classifier = _classifier(head_channels, num_classes, dropout)
        self.aux_head = aux_head
        if aux_head:
            self.pam_classifier = _classifier(head_channels, num_classes, dropout)
            self.cam_classifier = _classifier(head_channels, num_classes, dropout)

    def forward_logits(self, x):
        size = (x.shape[2], x.shape[3])
        pam, cam = self.head(self.encoder(x)[-1])
        outputs = [self.classifier(pam + cam)]
        if self.aux_head and self.is_training():
            outputs += [self.pam_classifier(pam), self.cam_classifier(cam)]
        outputs = [nn.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outputs]
        return outputs if len(outputs) > 1 else outputs[0]

    def extra_flops(self, input_shape):
        """FLOPs of the attention matrix products (not modules, so not seen by ``count_flops``).

        Args:
            input_shape: ``(N, C, H, W)`` of the input before padding.
        """
        n, _, h, w = input_shape
        pixels = math.ceil(h / self.size_divisor) * math.ceil(w / self.size_divisor)
        channels = self.head.pam.value.out_channels
        return n * (PositionAttention.matmul_flops(channels, pixels) + ChannelAttention.matmul_flops(channels, pixels))


# The narrow test configurations start gamma at 0.1 (at 0 the PAM's query/key convs get no gradient
# on the first step) and leave the branch classifiers out: the registry-wide tests require a
# gradient on every parameter from the main output alone. tests/test_attention_nets.py covers them.
@register_model(tiny={"encoder": "resnet18", "head_channels": 16, "gamma_init": 0.1, "aux_head": False})
def danet(in_channels=3, num_classes=2, encoder="resnet101", head_channels=512, aux_head=True, gamma_init=0.0,
          dropout=0.1):
    """DANet as in the paper: dilated ResNet-101, 512-wide attention branches, three outputs."""
    return DANet(in_channels, num_classes, encoder, head_channels, aux_head, gamma_init, dropout)


@register_model(tiny={"head_channels": 16, "gamma_init": 0.1, "aux_head": False})
def danet_r18(in_channels=3, num_classes=2, encoder="resnet18", head_channels=128, aux_head=True, gamma_init=0.0,
              dropout=0.1):
    """Light DANet: dilated ResNet-18 with 128-wide branches (a quarter of its 512 channels, as in the reference)."""
    return DANet(in_channels, num_classes, encoder, head_channels, aux_head, gamma_init, dropout)
