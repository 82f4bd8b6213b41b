"""HRNet backbone, HRNetV2 and OCRNet: official names, multi-resolution fusion, OCR maths, counts."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model, tiny_args
from model_zoo.backbones.hrnet import HRNET_CONFIGS, HighResolutionModule, HRNet, create_hrnet, hrnetv2_representation
from model_zoo.backend import jt
from model_zoo.layers import OCRBlock, ObjectRegionGather, PixelRegionAttention


def _input(shape, seed=0, scale=1.0):
    return jt.array((scale * np.random.RandomState(seed).randn(*shape)).astype("float32"))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _official_hrnet_keys(width, stage1_channels, stage1_blocks, num_modules, num_blocks):
    """State-dict keys of the official HighResolutionNet (without its classification head),
    following the construction rules of HRNet-Image-Classification's ``cls_hrnet.py``."""
    def bn(prefix):
        return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var")]

    def conv_bn(prefix):
        return [f"{prefix}.0.weight", *bn(f"{prefix}.1")]

    def block(prefix, convs, downsample):
        keys = [k for i in range(1, convs + 1) for k in (f"{prefix}.conv{i}.weight", *bn(f"{prefix}.bn{i}"))]
        return keys + (conv_bn(f"{prefix}.downsample") if downsample else [])

    keys = ["conv1.weight", *bn("bn1"), "conv2.weight", *bn("bn2")]
    keys += [k for b in range(stage1_blocks) for k in block(f"layer1.{b}", 3, downsample=b == 0)]
    widths = [4 * stage1_channels]
    for stage in (2, 3, 4):
        new_widths = [width * 2 ** b for b in range(stage)]
        for i, w in enumerate(new_widths):
            if i >= len(widths):
                keys += conv_bn(f"transition{stage - 1}.{i}.0")  # the new branch: one stride-2 conv
            elif widths[i] != w:
                keys += conv_bn(f"transition{stage - 1}.{i}")
        for m in range(num_modules[stage - 2]):
            prefix = f"stage{stage}.{m}"
            for branch in range(stage):
                for b in range(num_blocks[stage - 2]):
                    keys += block(f"{prefix}.branches.{branch}.{b}", 2, downsample=False)
            for i in range(stage):
                for j in range(stage):
                    if j > i:
                        keys += conv_bn(f"{prefix}.fuse_layers.{i}.{j}")
                    for k in range(i - j):
                        keys += conv_bn(f"{prefix}.fuse_layers.{i}.{j}.{k}")
        widths = new_widths
    return set(keys)


@pytest.mark.parametrize("name", ["hrnet_w18_small_v1", "hrnet_w18_small_v2", "hrnet_w18"])
def test_backbone_keys_are_the_official_keys(name):
    config = dict(HRNET_CONFIGS[name], width=4)
    assert set(create_hrnet(name, width=4).state_dict()) == _official_hrnet_keys(**config)


def test_backbone_shapes_follow_the_official_code():
    state = create_hrnet("hrnet_w18", in_channels=1).state_dict()
    assert list(state["conv1.weight"].shape) == [64, 1, 3, 3]
    assert list(state["layer1.3.conv3.weight"].shape) == [256, 64, 1, 1]
    assert list(state["transition1.0.0.weight"].shape) == [18, 256, 3, 3]
    assert list(state["transition3.3.0.0.weight"].shape) == [144, 72, 3, 3]
    assert list(state["stage3.3.branches.2.3.conv2.weight"].shape) == [72, 72, 3, 3]
    assert list(state["stage4.2.fuse_layers.0.3.0.weight"].shape) == [18, 144, 1, 1]   # 1x1, then upsample
    assert list(state["stage4.2.fuse_layers.3.0.0.0.weight"].shape) == [18, 18, 3, 3]  # stride 2, keeps width
    assert list(state["stage4.2.fuse_layers.3.0.2.0.weight"].shape) == [144, 18, 3, 3]  # last step: to 8C


def test_feature_maps_match_channels_and_strides():
    backbone = create_hrnet("hrnet_w18_small_v1", in_channels=2, width=4)
    backbone.eval()
    assert backbone.channels == [4, 8, 16, 32] and backbone.strides == [4, 8, 16, 32]
    features = backbone(_input((1, 2, 64, 96)))
    assert [list(f.shape) for f in features] == [[1, 4, 16, 24], [1, 8, 8, 12], [1, 16, 4, 6], [1, 32, 2, 3]]


def test_fusion_sums_every_branch_at_every_resolution():
    # Zero branch convs make each BasicBlock relu(x); all-ones fusion convs make the fusion countable.
    module = HighResolutionModule([2, 4], num_blocks=1)
    weights = {name: np.full(tuple(p.shape), 1.0 if "fuse_layers" in name else 0.0, dtype="float32")
               for name, p in module.state_dict().items() if len(p.shape) == 4}
    module.load_state_dict(weights)
    module.eval()
    high, low = module([jt.ones((1, 2, 8, 8)), jt.full((1, 4, 4, 4), 2.0)])
    # High resolution: 1 + the 1x1 conv of the low branch (4 channels x 2), upsampled: 9 everywhere.
    np.testing.assert_allclose(high.numpy(), np.full((1, 2, 8, 8), 9.0), rtol=1e-4)
    # Low resolution: 2 + a stride-2 3x3 conv over 2 channels of ones; the first row and column
    # of outputs see the zero padding (4 taps in the corner, 6 on the edges, 9 inside).
    taps = np.full((4, 4), 9.0)
    taps[0, :] = taps[:, 0] = 6.0
    taps[0, 0] = 4.0
    np.testing.assert_allclose(low.numpy(), np.broadcast_to(2.0 + 2.0 * taps, (1, 4, 4, 4)), rtol=1e-4)


def test_hrnetv2_representation_upsamples_and_concatenates():
    features = [_input((1, 4, 8, 8)), jt.full((1, 8, 4, 4), 1.5), jt.full((1, 16, 2, 2), -2.0),
                jt.full((1, 32, 1, 1), 3.0)]
    out = hrnetv2_representation(features).numpy()
    assert out.shape == (1, 60, 8, 8)
    np.testing.assert_array_equal(out[:, :4], features[0].numpy())
    np.testing.assert_allclose(out[:, 4:12], 1.5)
    np.testing.assert_allclose(out[:, 12:28], -2.0)
    np.testing.assert_allclose(out[:, 28:], 3.0)


def test_object_region_gather_is_a_spatially_softmax_weighted_average():
    features, logits = _input((2, 3, 4, 5)), _input((2, 2, 4, 5), seed=1, scale=2.0)
    got = ObjectRegionGather()(features, logits).numpy()
    weights = _softmax(logits.numpy().reshape(2, 2, 20), axis=2)
    expected = np.einsum("nkp,ncp->nck", weights, features.numpy().reshape(2, 3, 20))[..., None]
    assert got.shape == (2, 3, 2, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Equal logits: every region is the plain mean of the pixel features.
    uniform = ObjectRegionGather()(features, jt.zeros((2, 2, 4, 5))).numpy()
    np.testing.assert_allclose(uniform[..., 0, 0], features.numpy().mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


def test_pixel_region_attention_softmax_over_regions_scaled_by_sqrt_key_channels():
    jt.set_global_seed(0)
    attention = PixelRegionAttention(6, 4)
    attention.eval()
    features, regions = _input((2, 6, 3, 3), scale=3.0), _input((2, 6, 3, 1), seed=1, scale=3.0)
    query = attention.f_pixel(features).numpy().reshape(2, 4, 9)
    key = attention.f_object(regions).numpy().reshape(2, 4, 3)
    value = attention.f_down(regions).numpy().reshape(2, 4, 3)
    relation = _softmax(np.einsum("ndp,ndk->npk", query, key) / np.sqrt(4), axis=2)  # N x pixels x regions
    context = np.einsum("npk,ndk->ndp", relation, value).reshape(2, 4, 3, 3)
    expected = attention.f_up(jt.array(context.astype("float32"))).numpy()
    np.testing.assert_allclose(attention(features, regions).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_ocr_block_concatenates_context_and_pixels():
    block = OCRBlock(8, 4, 6)
    block.eval()
    assert list(block.fuse[0][0].weight.shape) == [6, 16, 1, 1]
    assert list(block(_input((2, 8, 5, 7)), _input((2, 3, 5, 7), seed=1)).shape) == [2, 6, 5, 7]


def test_ocrnet_returns_main_and_regions_in_training_only():
    jt.set_global_seed(0)
    model = create_model("ocrnet", num_classes=3, **tiny_args("ocrnet"))
    model.train()
    x = _input((2, 3, 64, 64))
    main, regions = model.forward_logits(x)
    assert list(main.shape) == [2, 3, 64, 64] and list(regions.shape) == [2, 3, 16, 16]
    assert [list(o.shape) for o in model(x)] == [[2, 3, 64, 64]] * 2
    model.eval()
    assert list(model(x).shape) == [2, 3, 64, 64]
    no_aux = create_model("ocrnet", num_classes=3, aux_head=False, **tiny_args("ocrnet"))
    no_aux.train()
    assert list(no_aux(x).shape) == [2, 3, 64, 64]


def test_hrnet_returns_logits_at_the_input_size():
    model = create_model("hrnet_w18", in_channels=1, num_classes=3, **tiny_args("hrnet_w18"))
    model.eval()
    assert list(model.forward_logits(_input((1, 1, 64, 96))).shape) == [1, 3, 64, 96]


def test_ocrnet_extra_flops_counts_the_matrix_products():
    model = create_model("ocrnet", num_classes=3, **tiny_args("ocrnet"))  # OCR widths 16, keys 8
    # 72 x 88 is padded to 96 x 96: 24 x 24 = 576 positions at stride 4, 3 regions.
    gather = 2 * 3 * 576 * 16
    relation_and_context = 2 * 2 * 576 * 3 * 8
    assert model.extra_flops((1, 3, 72, 88)) == gather + relation_and_context
    assert model.extra_flops((2, 3, 72, 88)) == 2 * (gather + relation_and_context)
    assert not hasattr(create_model("hrnet", **tiny_args("hrnet")), "extra_flops")  # no matrix products


@pytest.mark.parametrize("backbone,biases,paper_millions", [
    # HRNetV2 paper, Cityscapes (19 classes); the reference head's 1x1 conv has a bias (15 C values).
    ("hrnet_w48", 720, 65.9),
    ("hrnet_w18_small_v2", 270, 3.9),
    ("hrnet_w18_small_v1", 240, 1.5),
])
def test_hrnetv2_parameter_count_matches_the_paper(backbone, biases, paper_millions):
    count = count_parameters(create_model("hrnet", num_classes=19, backbone=backbone))
    assert round((count + biases) / 1e6, 1) == paper_millions


def test_ocr_head_parameter_count():
    # OCRNet-W18 minus HRNetV2-W18 (their auxiliary / main 1x1 heads are the same) at 19 classes.
    reduce = 270 * 512 * 9 + 2 * 512                          # 3x3 conv-BN-ReLU to 512
    f_pixel = f_object = 512 * 256 + 2 * 256 + 256 * 256 + 2 * 256
    f_down, f_up = 512 * 256 + 2 * 256, 256 * 512 + 2 * 512
    fuse = 1024 * 512 + 2 * 512
    classifier = 512 * 19 + 19
    expected = reduce + f_pixel + f_object + f_down + f_up + fuse + classifier
    ocr = count_parameters(create_model("ocrnet_w18", num_classes=19, ocr_channels=512, key_channels=256))
    assert ocr - count_parameters(create_model("hrnet_w18", num_classes=19)) == expected


def test_encoder_is_the_backbone_and_takes_its_weights():
    tiny = tiny_args("ocrnet")
    source = create_hrnet(tiny["backbone"], in_channels=1, width=tiny["width"])
    model = create_model("ocrnet", in_channels=1, **tiny)
    assert isinstance(model.get_encoder(), HRNet)
    assert "encoder.stage4.0.fuse_layers.3.0.2.0.weight" in model.state_dict()
    model.get_encoder().load_state_dict(source.state_dict())
    source.eval()
    model.eval()
    x = _input((1, 1, 32, 32))
    np.testing.assert_array_equal(model.get_encoder()(x)[0].numpy(), source(x)[0].numpy())


def test_bad_arguments():
    with pytest.raises(ModelZooError, match="unknown HRNet backbone 'hrnet_w17'"):
        create_model("hrnet", backbone="hrnet_w17")
    with pytest.raises(ModelZooError, match="num_modules must be 3 positive integers"):
        HRNet(num_modules=(1, 4))
    with pytest.raises(ModelZooError, match="width must be a positive integer"):
        create_model("ocrnet", width=0)
    with pytest.raises(ModelZooError, match="dropout must be in"):
        create_model("ocrnet", dropout=1.0)
