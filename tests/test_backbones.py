"""Backbones: torchvision parameter names and counts, feature maps, dilated output strides."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters
from model_zoo.backbones import BACKBONES, create_backbone
from model_zoo.backend import jt


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


# torchvision's published totals, less the classifier: ResNet fc = 512*expansion*1000 + 1000;
# VGG classifier = (25088*4096 + 4096) + (4096*4096 + 4096) + (4096*1000 + 1000) = 123,642,856.
_VGG_CLASSIFIER = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000


@pytest.mark.parametrize("name,torchvision_total,head", [
    ("resnet18", 11_689_512, 512 * 1000 + 1000),
    ("resnet34", 21_797_672, 512 * 1000 + 1000),
    ("resnet50", 25_557_032, 2048 * 1000 + 1000),
    ("resnet101", 44_549_160, 2048 * 1000 + 1000),
    ("vgg11", 132_863_336, _VGG_CLASSIFIER),
    ("vgg11_bn", 132_868_840, _VGG_CLASSIFIER),
    ("vgg16", 138_357_544, _VGG_CLASSIFIER),
    ("vgg16_bn", 138_365_992, _VGG_CLASSIFIER),
])
def test_parameter_count_is_torchvision_without_classifier(name, torchvision_total, head):
    assert count_parameters(create_backbone(name)) == torchvision_total - head


def _torchvision_resnet_keys(blocks_per_stage, convs_per_block):
    """The state-dict keys of torchvision's ResNet (fc and num_batches_tracked left out)."""
    def bn(prefix):
        return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var")]

    keys = ["conv1.weight", *bn("bn1")]
    for stage, blocks in enumerate(blocks_per_stage, start=1):
        for b in range(blocks):
            prefix = f"layer{stage}.{b}"
            for i in range(1, convs_per_block + 1):
                keys += [f"{prefix}.conv{i}.weight", *bn(f"{prefix}.bn{i}")]
            # Every Bottleneck stage projects in its first block; BasicBlock from layer2 on.
            if b == 0 and (stage > 1 or convs_per_block == 3):
                keys += [f"{prefix}.downsample.0.weight", *bn(f"{prefix}.downsample.1")]
    return set(keys)


@pytest.mark.parametrize("name,blocks,convs", [("resnet18", (2, 2, 2, 2), 2), ("resnet50", (3, 4, 6, 3), 3)])
def test_resnet_keys_are_torchvision_keys(name, blocks, convs):
    assert set(create_backbone(name).state_dict()) == _torchvision_resnet_keys(blocks, convs)


def test_resnet_shapes_follow_torchvision():
    state = create_backbone("resnet50", in_channels=1).state_dict()
    assert list(state["conv1.weight"].shape) == [64, 1, 7, 7]
    assert list(state["layer1.0.downsample.0.weight"].shape) == [256, 64, 1, 1]
    assert list(state["layer2.0.conv2.weight"].shape) == [128, 128, 3, 3]  # stride sits in conv2 (v1.5)
    assert list(state["layer4.2.conv3.weight"].shape) == [2048, 512, 1, 1]


@pytest.mark.parametrize("name,conv_indices,batch_norm", [
    ("vgg11", [0, 3, 6, 8, 11, 13, 16, 18], False),
    ("vgg11_bn", [0, 4, 8, 11, 15, 18, 22, 25], True),
    ("vgg16", [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], False),
])
def test_vgg_keys_are_torchvision_feature_indices(name, conv_indices, batch_norm):
    keys = set(create_backbone(name).state_dict())
    expected = {f"features.{i}.{s}" for i in conv_indices for s in ("weight", "bias")}
    if batch_norm:
        expected |= {f"features.{i + 1}.{s}" for i in conv_indices
                     for s in ("weight", "bias", "running_mean", "running_var")}
    assert keys == expected


@pytest.mark.parametrize("name,output_stride,channels,strides", [
    ("resnet18", 32, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    ("resnet18", 16, [64, 64, 128, 256, 512], [2, 4, 8, 16, 16]),
    ("resnet18", 8, [64, 64, 128, 256, 512], [2, 4, 8, 8, 8]),
    ("vgg11", None, [64, 128, 256, 512, 512], [1, 2, 4, 8, 16]),
])
def test_feature_maps_match_channels_and_strides(name, output_stride, channels, strides):
    kwargs = {} if output_stride is None else {"output_stride": output_stride}
    backbone = create_backbone(name, in_channels=2, **kwargs)
    backbone.eval()
    assert backbone.channels == channels and backbone.strides == strides
    features = backbone(_input((1, 2, 64, 64)))
    assert [list(f.shape) for f in features] == [[1, c, 64 // s, 64 // s] for c, s in zip(channels, strides)]


@pytest.mark.parametrize("name,output_stride,size", [("resnet18", 8, (64, 72)), ("resnet50", 16, (40, 40))])
def test_dilated_resnet_equals_strided_one_on_its_grid(name, output_stride, size):
    # DeepLab's property: with the same weights, the dilated network evaluated densely gives the
    # strided network's output at every (32 / output_stride)-th pixel.
    strided = create_backbone(name)
    dense = create_backbone(name, output_stride=output_stride)
    assert set(dense.state_dict()) == set(strided.state_dict())
    dense.load_state_dict(strided.state_dict())
    strided.eval()
    dense.eval()
    x = _input((1, 3) + size)
    step = 32 // output_stride
    expected, got = strided(x)[-1].numpy(), dense(x)[-1].numpy()
    assert got.shape[2] > expected.shape[2] and got[:, :, ::step, ::step].shape == expected.shape
    np.testing.assert_allclose(got[:, :, ::step, ::step], expected, rtol=1e-4, atol=1e-4)


def test_bad_backbone_arguments():
    with pytest.raises(ModelZooError, match="unknown backbone 'resnet17'"):
        create_backbone("resnet17")
    with pytest.raises(ModelZooError, match="output_stride must be 8, 16 or 32"):
        create_backbone("resnet34", output_stride=4)
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn"} <= set(BACKBONES)
