"""ResNet encoders (He et al., 2016, "Deep Residual Learning for Image Recognition",
https://arxiv.org/abs/1512.03385) with torchvision's parameter names.

Parameter names follow ``torchvision.models.resnet`` exactly (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer2.0.downsample.0``, ...) so ImageNet weights map 1:1; there is no
``fc`` head (torchvision's BatchNorm ``num_batches_tracked`` buffers have no Jittor counterpart).
The stride-2 3x3 conv sits in the bottleneck's ``conv2`` (torchvision's "ResNet v1.5").

``output_stride`` 16 or 8 replaces the stride of ``layer4`` (and ``layer3``) by dilation as in
DeepLab (Chen et al., 2017, https://arxiv.org/abs/1706.05587): the first block of a dilated stage
keeps the previous dilation on its formerly strided conv, the following convs use the new one, so
a dilated network evaluated densely equals the strided one at every ``output_stride``-th pixel.
"""
from ..backend import jt
from ..registry import ModelZooError

nn = jt.nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101"]


def _conv3x3(in_channels, out_channels, stride=1, dilation=1):
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut: the ResNet-18/34 block.

    Args:
        in_channels: input width.
        planes: width of both convs (``expansion`` is 1).
        stride: stride of ``conv1``.
        downsample: shortcut projection, or None for the identity.
        dilation: dilation of ``conv2``.
        first_dilation: dilation of ``conv1`` (default ``dilation``).
    """

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, downsample=None, dilation=1, first_dilation=None):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride, first_dilation or dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def execute(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a shortcut: the ResNet-50/101 block.

    Args:
        in_channels: input width.
        planes: width of the inner convs; the block outputs ``4 * planes``.
        stride: stride of the 3x3 ``conv2``.
        downsample: shortcut projection, or None for the identity.
        dilation: dilation ``conv2`` uses in every block after the first of its stage.
        first_dilation: dilation of ``conv2`` (default ``dilation``).
    """

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=None, dilation=1, first_dilation=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, first_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def execute(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet feature extractor: 7x7 stem, max-pool, four residual stages.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-34.
        in_channels: image channels (``conv1`` is ``64 x in_channels x 7 x 7``).
        output_stride: 32 (plain), 16 (``layer4`` dilated 2) or 8 (``layer3``/``layer4`` dilated 2/4).

    ``execute(x)`` returns five feature maps, shallow first: the stem after ReLU (before the
    max-pool) and the outputs of ``layer1`` .. ``layer4``. Their widths are ``channels``
    (``[64, 64, 128, 256, 512]`` with ``BasicBlock``, ``[64, 256, 512, 1024, 2048]`` with
    ``Bottleneck``) and their strides ``strides`` (``[2, 4, 8, 16, 32]``, ``[2, 4, 8, 16, 16]`` at
    output stride 16, ``[2, 4, 8, 8, 8]`` at 8).
    """

    def __init__(self, block, layers, in_channels=3, output_stride=32):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ModelZooError(f"ResNet: output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._width, self._dilation = 64, 1
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1, dilate=False)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=False)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=output_stride == 8)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=output_stride < 32)
        self.channels = [64] + [w * block.expansion for w in (64, 128, 256, 512)]
        self.strides = [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
        # torchvision's initialisation, so training from scratch behaves like the reference.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                jt.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, num_blocks, stride, dilate):
        first_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self._width != out_channels:
            downsample = nn.Sequential(nn.Conv2d(self._width, out_channels, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_channels))
        blocks = [block(self._width, planes, stride, downsample, self._dilation, first_dilation)]
        blocks += [block(out_channels, planes, dilation=self._dilation) for _ in range(num_blocks - 1)]
        self._width = out_channels
        return nn.Sequential(*blocks)

    def execute(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def resnet18(in_channels=3, output_stride=32):
    """ResNet-18: 11,176,512 parameters (torchvision's 11,689,512 less the 513,000 of ``fc``)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, output_stride)


def resnet34(in_channels=3, output_stride=32):
    """ResNet-34: 21,284,672 parameters (torchvision's 21,797,672 less ``fc``)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), in_channels, output_stride)


def resnet50(in_channels=3, output_stride=32):
    """ResNet-50: 23,508,032 parameters (torchvision's 25,557,032 less the 2,049,000 of ``fc``)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, output_stride)


def resnet101(in_channels=3, output_stride=32):
    """ResNet-101: 42,500,160 parameters (torchvision's 44,549,160 less ``fc``)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), in_channels, output_stride)
