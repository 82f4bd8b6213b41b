"""VGG encoders (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for Large-Scale
Image Recognition", https://arxiv.org/abs/1409.1556) with torchvision's parameter names.

The convolutional part only (no classifier), indexed as ``torchvision.models.vgg*.features``:
conv, [BatchNorm,] ReLU per layer and a max-pool between stages, so ``features.N`` names map 1:1
onto ImageNet weights. torchvision's last max-pool (``features.20`` in ``vgg11``) carries no
weights and is left out: consumers pool the deepest map themselves when they need stride 32.
"""
from ..backend import jt

nn = jt.nn

__all__ = ["VGG", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn"]

_POOL = "M"
# Conv widths per layer and max-pools, torchvision's configurations "A" and "D" without the final pool.
_CONFIGS = {
    "vgg11": [64, _POOL, 128, _POOL, 256, 256, _POOL, 512, 512, _POOL, 512, 512],
    "vgg16": [64, 64, _POOL, 128, 128, _POOL, 256, 256, 256, _POOL, 512, 512, 512, _POOL, 512, 512, 512],
}


class VGG(nn.Module):
    """VGG feature extractor: five stages of 3x3 conv-ReLU layers separated by 2x2 max-pools.

    Args:
        config: conv widths and ``"M"`` (max-pool) entries, in order.
        batch_norm: BatchNorm after every conv, as in torchvision's ``vgg*_bn``.
        in_channels: image channels.

    ``execute(x)`` returns the output of every stage before its max-pool, shallow first: five
    maps at strides ``[1, 2, 4, 8, 16]`` (``strides``) with widths ``[64, 128, 256, 512, 512]``
    (``channels``).
    """

    def __init__(self, config, batch_norm=False, in_channels=3):
        super().__init__()
        layers, width = [], in_channels
        self.channels = []
        for entry in config:
            if entry == _POOL:
                self.channels.append(width)
                layers.append(nn.MaxPool2d(2, stride=2))
                continue
            layers.append(nn.Conv2d(width, entry, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(entry))
            layers.append(nn.ReLU())
            width = entry
        self.channels.append(width)
        self.strides = [2 ** i for i in range(len(self.channels))]
        self.features = nn.Sequential(*layers)
        # torchvision's initialisation, so training from scratch behaves like the reference.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                jt.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                jt.init.zero_(m.bias)

    def execute(self, x):
        features = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                features.append(x)
            x = layer(x)
        features.append(x)
        return features


def vgg11(in_channels=3):
    """VGG-11 features, 9,220,480 parameters (torchvision's 132,863,336 less the classifier)."""
    return VGG(_CONFIGS["vgg11"], False, in_channels)


def vgg11_bn(in_channels=3):
    """VGG-11 with BatchNorm, 9,225,984 parameters (torchvision's 132,868,840 less the classifier)."""
    return VGG(_CONFIGS["vgg11"], True, in_channels)


def vgg16(in_channels=3):
    """VGG-16 features, 14,714,688 parameters (torchvision's 138,357,544 less the classifier)."""
    return VGG(_CONFIGS["vgg16"], False, in_channels)


def vgg16_bn(in_channels=3):
    """VGG-16 with BatchNorm, 14,723,136 parameters (torchvision's 138,365,992 less the classifier)."""
    return VGG(_CONFIGS["vgg16"], True, in_channels)
