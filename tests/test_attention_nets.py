"""DANet, OCNet, EANet and LRF-EANet: attention blocks against their formulas, outputs in training
and evaluation, FLOPs of the matrix products, parameter counts against the reference code."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model
from model_zoo.backend import jt
from model_zoo.danet import PositionAttention
from model_zoo.layers import ChannelAttention
from model_zoo.layers import ExternalAttention
from model_zoo.lrf_eanet import LRFEncoder, group_norm
from model_zoo.ocnet import ASPOC, ObjectContextBlock

# torchvision ResNet-101 without fc. The reference codes of DANet, OCNet and EANet use a "deep stem"
# (three 3x3 convs, 128-wide layer1 input) instead of its 7x7 conv: 123,776 parameters more
# (112,832 stem + 20,480 in layer1 - 9,536).
RESNET101 = 42_500_160


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


def _softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _conv1x1(conv, x):
    """A 1x1 conv in numpy on a ``C x P`` matrix."""
    w = conv.weight.numpy()[:, :, 0, 0]
    return w @ x + (conv.bias.numpy()[:, None] if conv.bias is not None else 0)


# ---- DANet --------------------------------------------------------------------------------------

def test_position_attention_matches_its_formula():
    block = PositionAttention(16, gamma_init=0.5)
    x = _input((1, 16, 3, 2), seed=1)
    flat = x.numpy().reshape(16, 6)
    query, key, value = (_conv1x1(conv, flat) for conv in (block.query, block.key, block.value))
    attention = _softmax(query.T @ key, axis=1)                 # row i: query pixel i over all pixels
    expected = flat + 0.5 * value @ attention.T
    np.testing.assert_allclose(block(x).numpy().reshape(16, 6), expected, rtol=1e-4, atol=1e-5)
    assert block.query.out_channels == block.key.out_channels == 2


def test_channel_attention_matches_the_reference_formula():
    x = _input((1, 3, 2, 2), seed=2)
    flat = x.numpy().reshape(3, 4)
    energy = flat @ flat.T
    expected = flat + 0.5 * _softmax(energy.max(axis=1, keepdims=True) - energy, axis=1) @ flat
    np.testing.assert_allclose(ChannelAttention(gamma_init=0.5)(x).numpy().reshape(3, 4), expected,
                               rtol=1e-5, atol=1e-5)


def test_attention_modules_start_as_identity_and_reject_narrow_inputs():
    x = _input((2, 8, 3, 3))
    np.testing.assert_array_equal(PositionAttention(8)(x).numpy(), x.numpy())
    np.testing.assert_array_equal(ChannelAttention()(x).numpy(), x.numpy())
    with pytest.raises(ModelZooError, match="at least 8"):
        PositionAttention(4)


def test_danet_returns_sum_pam_and_cam_in_training_only():
    model = create_model("danet_r18", head_channels=16, gamma_init=0.1, dropout=0.0)
    # Give the branch classifiers the main classifier's weights and no bias: since the classifier
    # is linear, the main output must then be the sum of the two branch outputs plus its bias.
    main, pam, cam = (c[1] for c in (model.classifier, model.pam_classifier, model.cam_classifier))
    for conv in (pam, cam):
        conv.weight.assign(main.weight.detach())
        jt.init.zero_(conv.bias)
    model.train()
    outputs = model(_input((2, 3, 64, 64)))
    assert len(outputs) == 3 and all(list(o.shape) == [2, 2, 64, 64] for o in outputs)
    bias = main.bias.numpy()[None, :, None, None]
    np.testing.assert_allclose(outputs[0].numpy() - bias, outputs[1].numpy() + outputs[2].numpy(),
                               rtol=1e-4, atol=1e-4)
    model.eval()
    assert list(model(_input((1, 3, 40, 48))).shape) == [1, 2, 40, 48]
    single = create_model("danet_r18", head_channels=16, aux_head=False)
    single.train()
    assert not isinstance(single(_input((1, 3, 32, 32))), (list, tuple))
    assert not hasattr(single, "pam_classifier")


def test_danet_extra_flops_count_the_attention_products():
    model = create_model("danet_r18", head_channels=16)        # PAM query/key 2 channels
    # 64x64 -> 8x8 = 64 pixels: PAM 2*64*64*(2+16), CAM 2*2*16*16*64.
    assert model.extra_flops((1, 3, 64, 64)) == 2 * 64 * 64 * 18 + 4 * 16 * 16 * 64
    # 72x88 (multiples of 8) -> 9x11 = 99 pixels; the count scales with the batch.
    assert model.extra_flops((2, 3, 72, 88)) == 2 * (2 * 99 * 99 * 18 + 4 * 16 * 16 * 99)


# ---- OCNet --------------------------------------------------------------------------------------

def _object_context_expected(block, x):
    """Object context of a ``C x P`` matrix in numpy (eval-mode BatchNorm with fresh statistics)."""
    bn_scale = 1 / np.sqrt(1 + 1e-5)
    query_key = np.maximum(_conv1x1(block.query_key[0], x) * bn_scale, 0)
    similarity = _softmax(query_key.T @ query_key / np.sqrt(block.key_channels), axis=1)
    return _conv1x1(block.out, _conv1x1(block.value, x) @ similarity.T)


def test_object_context_matches_its_formula():
    block = ObjectContextBlock(8, key_channels=4, value_channels=6, out_channels=5, zero_init=False)
    block.eval()
    x = _input((1, 8, 3, 4), seed=3)
    expected = _object_context_expected(block, x.numpy().reshape(8, 12))
    np.testing.assert_allclose(block(x).numpy().reshape(5, 12), expected, rtol=1e-4, atol=1e-5)


def test_object_context_at_scale_2_attends_on_the_max_pooled_map():
    block = ObjectContextBlock(4, key_channels=2, value_channels=4, out_channels=4, scale=2, zero_init=False)
    block.eval()
    x = _input((1, 4, 5, 7), seed=4)
    pooled = x.numpy()[0, :, :4, :6].reshape(4, 2, 2, 3, 2).max(axis=(2, 4))   # floor mode: 2x3 map
    context = _object_context_expected(block, pooled.reshape(4, 6)).reshape(1, 4, 2, 3)
    expected = jt.nn.interpolate(jt.array(context.astype("float32")), size=(5, 7), mode="bilinear",
                                 align_corners=True)
    np.testing.assert_allclose(block(x).numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_object_context_starts_at_zero_like_the_reference():
    block = ObjectContextBlock(8, 4, 8, 8)
    np.testing.assert_array_equal(block(_input((2, 8, 4, 4))).numpy(), 0)


def test_asp_oc_has_five_branches_and_doubles_the_branch_width():
    block = ASPOC(16, 8)
    dilations = [branch[0].dilation for branch in block.branches]
    assert [d if isinstance(d, int) else d[0] for d in dilations] == [1, 12, 24, 36]
    assert block.fuse[0][0].in_channels == 5 * 8
    block.eval()
    assert list(block(_input((1, 16, 5, 6))).shape) == [1, 16, 5, 6]


@pytest.mark.parametrize("context", ["asp", "base"])
def test_ocnet_returns_main_and_aux_in_training_only(context):
    model = create_model("ocnet_r18", context=context, head_channels=16, zero_init=False)
    model.train()
    outputs = model(_input((2, 3, 64, 64)))
    assert len(outputs) == 2 and all(list(o.shape) == [2, 2, 64, 64] for o in outputs)
    model.eval()
    assert list(model(_input((1, 3, 72, 88))).shape) == [1, 2, 72, 88]
    with pytest.raises(ModelZooError, match="context must be"):
        create_model("ocnet_r18", context="pyramid")


def test_ocnet_extra_flops_count_the_object_context_products():
    # ASP-OC on a 16-wide head: object context of key 4 and value 8 on the 2x2 max-pooled map.
    # 64x64 -> 8x8 -> pooled 4x4 = 16 pixels.
    assert create_model("ocnet_r18", head_channels=16).extra_flops((1, 3, 64, 64)) == 2 * 16 * 16 * (4 + 8)
    # Base-OC: key = value = 8 on the full 8x8 map; 72x88 -> 9x11 = 99 pixels, batch 2.
    base = create_model("ocnet_r18", context="base", head_channels=16)
    assert base.extra_flops((1, 3, 64, 64)) == 2 * 64 * 64 * 16
    assert base.extra_flops((2, 3, 72, 88)) == 2 * 2 * 99 * 99 * 16


@pytest.mark.parametrize("name,args", [("danet_r18", {"gamma_init": 0.1}), ("ocnet_r18", {"zero_init": False})])
def test_auxiliary_outputs_train_every_parameter(name, args):
    # The registry-wide tests build these without auxiliary outputs; with them, the summed losses
    # of all outputs must reach every parameter.
    jt.set_global_seed(0)
    model = create_model(name, head_channels=16, **args)
    model.train()
    outputs = model(_input((2, 3, 64, 64)))
    weights = _input((2, 2, 64, 64), seed=1)
    params = [p for p in model.parameters() if not p.name().endswith(("running_mean", "running_var"))]
    grads = jt.grad(sum((o * weights).mean() for o in outputs), params)
    assert not [p.name() for p, g in zip(params, grads) if not np.abs(g.numpy()).sum() > 0]


# ---- external attention and EANet ---------------------------------------------------------------

def test_double_normalisation_by_hand():
    # Two slots, two pixels: softmax over pixels gives rows [1/4, 3/4] and [1/2, 1/2]; normalising
    # each pixel over the slots gives [1/3, 2/3] and [3/5, 2/5].
    affinity = jt.array(np.array([[0.0, np.log(3.0)], [0.0, 0.0]], dtype="float32").reshape(1, 2, 1, 2))
    weights = ExternalAttention.double_normalise(affinity).numpy().reshape(2, 2)
    np.testing.assert_allclose(weights, [[1 / 3, 3 / 5], [2 / 3, 2 / 5]], rtol=1e-5)


def test_external_attention_matches_its_formula():
    block = ExternalAttention(6, memory_size=4)
    block.eval()
    np.testing.assert_array_equal(block.memory_value.weight.numpy()[:, :, 0, 0],
                                  block.memory_key.weight.numpy()[:, :, 0, 0].T)
    x = _input((1, 6, 3, 5), seed=5)
    flat = x.numpy().reshape(6, 15)
    affinity = _softmax(_conv1x1(block.memory_key, _conv1x1(block.conv_in, flat)), axis=1)   # over pixels
    affinity = affinity / (affinity.sum(axis=0, keepdims=True) + 1e-9)                       # over slots
    out = _conv1x1(block.conv_out, _conv1x1(block.memory_value, affinity)) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(block(x).numpy().reshape(6, 15), np.maximum(flat + out, 0), rtol=1e-4, atol=1e-5)


def test_eanet_has_no_auxiliary_output():
    model = create_model("eanet_r18", head_channels=16, memory_size=8)
    model.train()
    out = model(_input((2, 3, 64, 64)))
    assert not isinstance(out, (list, tuple)) and list(out.shape) == [2, 2, 64, 64]
    assert model.attention.memory_key.out_channels == 8


# ---- LRF-EANet ----------------------------------------------------------------------------------

@pytest.mark.parametrize("channels,groups", [(12, 1), (63, 1), (64, 4), (96, 4), (128, 8), (256, 16), (512, 32),
                                             (2048, 32), (130, 2)])
def test_group_norm_uses_the_reference_group_counts(channels, groups):
    assert group_norm(channels).num_groups == groups


def test_lrf_encoder_strides_widths_and_dilations():
    encoder = LRFEncoder(in_channels=1, base_channels=8, depths=(1, 2, 18, 4))
    encoder.eval()
    features = encoder(_input((1, 1, 64, 96)))
    assert [list(f.shape[1:]) for f in features] == [[8, 32, 48], [8, 16, 24], [16, 8, 12], [32, 4, 6], [64, 4, 6]]
    assert encoder.channels == [8, 8, 16, 32, 64] and encoder.strides == [2, 4, 8, 16, 16]

    def dilations(stage):
        return [block.body[0].dilation[0] if isinstance(block.body[0].dilation, tuple) else block.body[0].dilation
                for block in stage if hasattr(block, "body")]

    assert dilations(encoder.stage3) == [1, 1, 2] * 6
    assert dilations(encoder.stage4) == [1, 2, 4, 8]
    assert dilations(encoder.stage2) == [1, 1]


def test_lrf_eanet_rejects_bad_depths():
    with pytest.raises(ModelZooError, match="depths"):
        create_model("lrf_eanet", depths=(1, 2, 3))


# ---- parameter counts at the default configuration (2 classes) -----------------------------------


@pytest.mark.parametrize("name,expected", [
    # The reference DANetHead on 2048 channels: two 3x3 2048->512 and two 3x3 512->512 conv-BN,
    # PAM (query/key 512->64, value 512->512, gamma), CAM (gamma), three 1x1 classifiers: 23,928,456.
    ("danet", RESNET101 + 23_928_456),
    # The reference ASP-OC network: 3x3 2048->512, ASP-OC(512, 256), classifier and layer3 head:
    # 19,900,804, less the biases of five convs that BatchNorm follows (512 + 256 + 128 + 256 + 512).
    ("ocnet", RESNET101 + 19_900_804 - 1_664),
    # The reference EANet head: 3x3 2048->512, external attention (S=64), 3x3 512->256, classifier.
    ("eanet", RESNET101 + 11_210_242),
    # JMedSeg's LRFEANet has exactly these layers: encoder 47,450,024, external attention 591,360,
    # patch split 3,150,336, transposed-conv classifier 2,050.
    ("lrf_eanet", 51_193_770),
])
def test_default_parameter_counts_match_the_reference_code(name, expected):
    assert count_parameters(create_model(name, in_channels=3, num_classes=2)) == expected
