"""ImageNet-style encoder backbones with torchvision's parameter names.

Each backbone's ``execute(x)`` returns a list of feature maps, shallow first, and exposes their
widths as ``channels`` and their strides as ``strides``:

* ResNets: the stem (stride 2) and ``layer1``..``layer4`` (strides 4..32, or less with
  ``output_stride`` 16/8, see ``resnet.ResNet``);
* VGGs: every stage before its max-pool (strides 1..16, see ``vgg.VGG``);
* HarDNet-68 (the authors' names): the stem and the stages before each pool (strides 2..32, see ``hardnet.HarDNet``).

>>> encoder = create_backbone("resnet34", in_channels=1)
>>> encoder.channels, encoder.strides
([64, 64, 128, 256, 512], [2, 4, 8, 16, 32])
"""
from ..registry import ModelZooError
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101
from .vgg import VGG, vgg11, vgg11_bn, vgg16, vgg16_bn
from .hardnet import HarDNet, hardnet68  # noqa: F401
from .hrnet import HRNet, create_hrnet, hrnet_w18, hrnet_w18_small_v1, hrnet_w18_small_v2, hrnet_w48  # noqa: F401
from .pretrained import adapt_input_conv, load_pretrained, read_torch_weights  # noqa: F401
from .vit import VisionTransformer, vit_base_patch16, vit_large_patch16, vit_light_patch16  # noqa: F401

__all__ = ["BACKBONES", "RESNETS", "create_backbone", "dilated_resnet", "ResNet", "BasicBlock", "Bottleneck", "VGG", "resnet18", "resnet34",
           "resnet50", "resnet101", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn"]

BACKBONES = {fn.__name__: fn for fn in (resnet18, resnet34, resnet50, resnet101, vgg11, vgg11_bn, vgg16, vgg16_bn)}
BACKBONES["hardnet68"] = hardnet68
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def create_backbone(name, in_channels=3, **kwargs):
    """Build the backbone ``name`` (a key of ``BACKBONES``); ``kwargs`` go to its builder."""
    if name not in BACKBONES:
        raise ModelZooError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels=in_channels, **kwargs)


def dilated_resnet(owner, name, in_channels, output_stride):
    """The ResNet ``name`` with ``layer3``/``layer4`` dilated to ``output_stride``, for the network
    ``owner`` (named in the error raised for any other backbone)."""
    if name not in RESNETS:
        raise ModelZooError(f"{owner}: encoder must be one of {', '.join(RESNETS)}, got {name!r}")
    return create_backbone(name, in_channels, output_stride=output_stride)
