"""HRNet backbones (Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu and Xiao, 2019,
"Deep High-Resolution Representation Learning for Visual Recognition", TPAMI 2020,
https://arxiv.org/abs/1908.07919) with the official HRNet parameter names.

Layout: a stem of two stride-2 3x3 conv-BN-ReLU (64 channels, stride 4); stage 1 (``layer1``):
Bottleneck blocks; stages 2-4: ``num_modules`` high-resolution modules with 2, 3 and 4 parallel
branches of widths ``C, 2C, 4C, 8C`` at strides 4, 8, 16, 32. Each module runs ``num_blocks``
BasicBlocks per branch, then fuses: every output branch is the ReLU of the sum of all branches
brought to its resolution (1x1 conv-BN then bilinear upsampling from lower resolutions, chains of
stride-2 3x3 conv-BN from higher ones). Before stages 2-4 a transition adapts the widths of the
existing branches (3x3 conv-BN-ReLU, where they change) and derives the new lowest-resolution
branch from the previous one with a stride-2 3x3 conv-BN-ReLU.

Parameter names follow the official code (HRNet-Image-Classification / HRNet-Semantic-Segmentation)
exactly: ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``layer1.0.downsample.0``, ``transition1.1.0.0``,
``stage2.0.branches.1.3.conv2``, ``stage3.2.fuse_layers.2.0.1.0``, ... so ImageNet weights map 1:1
(their classification head — ``incre_modules``, ``downsamp_modules``, ``final_layer``,
``classifier`` — and BatchNorm's ``num_batches_tracked`` have no counterpart here). Slots the
official code fills with ``None`` (a fusion from a branch to itself, a transition that keeps a
branch's width) hold a parameter-free identity, so indices line up. Differences: upsampling in
the fusion is bilinear with ``align_corners=False`` (the official segmentation code uses bilinear,
with ``align_corners`` set per experiment; the classification code uses nearest); initialisation
is Kaiming-normal (fan-out) for convolutions, as in the official ImageNet training.
"""
from numbers import Integral

from ..backend import jt
from ..registry import ModelZooError
from .resnet import BasicBlock, Bottleneck

nn = jt.nn

__all__ = ["HRNET_CONFIGS", "HighResolutionModule", "HRNet", "create_hrnet", "hrnetv2_representation",
           "hrnet_w18_small_v1", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w48"]

# Official configurations (experiments/*.yaml): branch width C, Bottleneck width and count of stage 1,
# modules and BasicBlocks per branch of stages 2, 3 and 4.
HRNET_CONFIGS = {
    "hrnet_w18_small_v1": dict(width=16, stage1_channels=32, stage1_blocks=1, num_modules=(1, 1, 1),
                               num_blocks=(2, 2, 2)),
    "hrnet_w18_small_v2": dict(width=18, stage1_channels=64, stage1_blocks=2, num_modules=(1, 3, 2),
                               num_blocks=(2, 2, 2)),
    "hrnet_w18": dict(width=18, stage1_channels=64, stage1_blocks=4, num_modules=(1, 4, 3), num_blocks=(4, 4, 4)),
    "hrnet_w48": dict(width=48, stage1_channels=64, stage1_blocks=4, num_modules=(1, 4, 3), num_blocks=(4, 4, 4)),
}

_STEM_CHANNELS = 64


def _conv_bn(in_channels, out_channels, kernel_size, stride=1, relu=False):
    """Conv (no bias) and BatchNorm, then ReLU if ``relu``: the unit of transitions and fusions."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _residual_blocks(block, in_channels, planes, num_blocks):
    """``num_blocks`` stride-1 residual blocks; the first projects its shortcut if the width changes."""
    out_channels = planes * block.expansion
    downsample = _conv_bn(in_channels, out_channels, 1) if in_channels != out_channels else None
    blocks = [block(in_channels, planes, downsample=downsample)]
    blocks += [block(out_channels, planes) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _transition(in_widths, out_widths):
    """Adapt the existing branches to ``out_widths`` and derive one new, half-resolution branch."""
    layers = [nn.Identity() if c_in == c_out else _conv_bn(c_in, c_out, 3, relu=True)
              for c_in, c_out in zip(in_widths, out_widths)]
    # The official code allows a chain of stride-2 convs here; every configuration adds one branch.
    layers.append(nn.Sequential(_conv_bn(in_widths[-1], out_widths[-1], 3, stride=2, relu=True)))
    return nn.ModuleList(layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by the multi-resolution fusion.

    Args:
        widths: branch widths, highest resolution first; branch ``b`` has half the resolution of
            branch ``b - 1``.
        num_blocks: BasicBlocks per branch.

    ``execute(features)`` takes and returns a list of maps, one per branch. Output ``i`` is
    ``relu(sum_j F_ij(B_j(x_j)))`` with ``B_j`` branch ``j``'s blocks and ``F_ij`` the identity
    (``j = i``), 1x1 conv-BN then bilinear upsampling to branch ``i``'s size (``j > i``), or
    ``i - j`` stride-2 3x3 convs (conv-BN-ReLU, the last conv-BN to branch ``i``'s width; ``j < i``).
    """

    def __init__(self, widths, num_blocks):
        super().__init__()
        widths = list(widths)
        self.branches = nn.ModuleList([_residual_blocks(BasicBlock, w, w, num_blocks) for w in widths])
        self.fuse_layers = nn.ModuleList([
            nn.ModuleList([self._fuse_layer(widths, source, target) for source in range(len(widths))])
            for target in range(len(widths))])

    @staticmethod
    def _fuse_layer(widths, source, target):
        if source == target:
            return nn.Identity()
        if source > target:
            return _conv_bn(widths[source], widths[target], 1)
        steps = [_conv_bn(widths[source], widths[source], 3, stride=2, relu=True) for _ in range(target - source - 1)]
        steps.append(_conv_bn(widths[source], widths[target], 3, stride=2))
        return nn.Sequential(*steps)

    def execute(self, features):
        features = [branch(x) for branch, x in zip(self.branches, features)]
        fused = []
        for target, fuse_row in enumerate(self.fuse_layers):
            size = (features[target].shape[2], features[target].shape[3])
            total = features[target]
            for source, (fuse, x) in enumerate(zip(fuse_row, features)):
                if source == target:
                    continue
                y = fuse(x)
                if source > target:
                    y = nn.interpolate(y, size=size, mode="bilinear", align_corners=False)
                total = total + y
            fused.append(nn.relu(total))
        return fused


def _check_positive_ints(name, value, length=None):
    values = list(value) if length is not None and isinstance(value, (list, tuple)) else [value]
    if (length is not None and len(values) != length) or not all(
            isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in values):
        what = f"{length} positive integers" if length is not None else "a positive integer"
        raise ModelZooError(f"HRNet: {name} must be {what}, got {value!r}")


class HRNet(nn.Module):
    """HRNet feature extractor: stem, Bottleneck stage, three multi-resolution stages.

    Args:
        in_channels: image channels (``conv1`` is ``64 x in_channels x 3 x 3``).
        width: width ``C`` of the highest-resolution branch; the branches have ``C, 2C, 4C, 8C``
            channels (default 48, HRNet-W48).
        stage1_channels: Bottleneck width of stage 1 (``layer1`` outputs 4x as many; default 64).
        stage1_blocks: Bottleneck blocks of stage 1 (default 4).
        num_modules: high-resolution modules in stages 2, 3, 4 (default ``(1, 4, 3)``).
        num_blocks: BasicBlocks per branch in each module of stages 2, 3, 4 (default ``(4, 4, 4)``).

    ``execute(x)`` returns the four branch outputs of the last module, highest resolution first:
    widths ``channels = [C, 2C, 4C, 8C]`` at ``strides = [4, 8, 16, 32]``. Inputs whose sides are
    not multiples of 32 work (branch sizes round up), but the branches then do not tile exactly.
    """

    def __init__(self, in_channels=3, width=48, stage1_channels=64, stage1_blocks=4, num_modules=(1, 4, 3),
                 num_blocks=(4, 4, 4)):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("stage1_channels", stage1_channels),
                            ("stage1_blocks", stage1_blocks)):
            _check_positive_ints(name, value)
        _check_positive_ints("num_modules", num_modules, length=3)
        _check_positive_ints("num_blocks", num_blocks, length=3)
        self.conv1 = nn.Conv2d(in_channels, _STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        self.conv2 = nn.Conv2d(_STEM_CHANNELS, _STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(_STEM_CHANNELS)
        self.relu = nn.ReLU()
        self.layer1 = _residual_blocks(Bottleneck, _STEM_CHANNELS, stage1_channels, stage1_blocks)
        widths2, widths3, widths4 = ([width * 2 ** b for b in range(n)] for n in (2, 3, 4))
        self.transition1 = _transition([stage1_channels * Bottleneck.expansion], widths2)
        self.stage2 = nn.Sequential(*[HighResolutionModule(widths2, num_blocks[0]) for _ in range(num_modules[0])])
        self.transition2 = _transition(widths2, widths3)
        self.stage3 = nn.Sequential(*[HighResolutionModule(widths3, num_blocks[1]) for _ in range(num_modules[1])])
        self.transition3 = _transition(widths3, widths4)
        self.stage4 = nn.Sequential(*[HighResolutionModule(widths4, num_blocks[2]) for _ in range(num_modules[2])])
        self.channels = widths4
        self.strides = [4, 8, 16, 32]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                jt.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def execute(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        features = [self.layer1(x)]
        for transition, stage in ((self.transition1, self.stage2), (self.transition2, self.stage3),
                                  (self.transition3, self.stage4)):
            # Existing branches go through their own transition; the new one starts from the lowest.
            features = [layer(features[min(i, len(features) - 1)]) for i, layer in enumerate(transition)]
            features = stage(features)
        return features


def hrnetv2_representation(features):
    """HRNetV2's output: every branch upsampled (bilinear) to the first one's size, concatenated.

    Args:
        features: branch maps, highest resolution first (``HRNet.execute``'s output).

    Returns:
        ``N x sum(channels) x H/4 x W/4`` (720 channels for HRNet-W48, 270 for W18).
    """
    size = (features[0].shape[2], features[0].shape[3])
    upsampled = [features[0]] + [nn.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                 for f in features[1:]]
    return jt.concat(upsampled, dim=1)


def create_hrnet(name, in_channels=3, width=None):
    """Build the HRNet configuration ``name`` (a key of ``HRNET_CONFIGS``).

    ``width`` replaces the configuration's branch width ``C`` (narrow test networks); None keeps it.
    """
    if name not in HRNET_CONFIGS:
        raise ModelZooError(f"unknown HRNet backbone {name!r}; choose from {', '.join(HRNET_CONFIGS)}")
    config = dict(HRNET_CONFIGS[name])
    if width is not None:
        config["width"] = width
    return HRNet(in_channels, **config)


def hrnet_w18_small_v1(in_channels=3):
    """HRNet-W18-Small-v1: C=16, one module per stage, 2 blocks per branch (13.2 M with the ImageNet head)."""
    return create_hrnet("hrnet_w18_small_v1", in_channels)


def hrnet_w18_small_v2(in_channels=3):
    """HRNet-W18-Small-v2: C=18, modules 1/3/2, 2 blocks per branch (15.6 M with the ImageNet head)."""
    return create_hrnet("hrnet_w18_small_v2", in_channels)


def hrnet_w18(in_channels=3):
    """HRNet-W18: C=18, modules 1/4/3, 4 blocks per branch (21.3 M with the ImageNet head)."""
    return create_hrnet("hrnet_w18", in_channels)


def hrnet_w48(in_channels=3):
    """HRNet-W48: C=48, modules 1/4/3, 4 blocks per branch (77.5 M with the ImageNet head)."""
    return create_hrnet("hrnet_w48", in_channels)
