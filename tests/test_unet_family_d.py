"""U²-Net / U²-NetP, CS-Net, SCSE-UNet and the squeeze-and-excitation blocks."""
import numpy as np
import pytest

from model_zoo import InputSizeError, ModelZooError, count_flops, count_parameters, create_model
from model_zoo.backend import jt
from model_zoo.csnet import SpatialAttention
from model_zoo.layers import ChannelAttention
from model_zoo.layers import ChannelSE, SpatialChannelSE, SpatialSE, SqueezeExcite
from model_zoo.u2net import RSU


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


def _bias_free_channels(model):
    """Biases the reference code has on every conv that we leave out before BatchNorm."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, jt.nn.Conv2d) and m.bias is None)


def _set(conv, weight=0.0, bias=0.0):
    conv.weight.assign(jt.full(tuple(conv.weight.shape), weight))
    conv.bias.assign(jt.full(tuple(conv.bias.shape), bias))


# ---- U²-Net -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, ours, reference", [("u2net", 43_995_469, 44_009_869),
                                                    ("u2netp", 1_128_333, 1_131_181)])
def test_u2net_parameter_counts_match_the_reference(name, ours, reference):
    # The reference code (one output class) has 44,009,869 / 1,131,181 parameters (the paper's
    # 176.3 MB / 4.7 MB); ours only lacks the biases of the convs that BatchNorm follows.
    model = create_model(name, num_classes=1)
    assert count_parameters(model) == ours
    assert count_parameters(model) + _bias_free_channels(model) == reference


def test_rsu_dilations_follow_the_paper():
    def dilations(block):
        convs = [m for m in block.modules() if isinstance(m, jt.nn.Conv2d)]
        return [c.dilation if isinstance(c.dilation, int) else c.dilation[0] for c in convs]

    # Module order: input conv, encoder levels, bottom, decoder levels from the shallowest.
    assert dilations(RSU(3, 4, 8, height=7)) == [1] * 7 + [2] + [1] * 6
    assert dilations(RSU(3, 4, 8, height=4, dilated=True)) == [1, 1, 2, 4, 8, 1, 2, 4]


def test_rsu_4f_keeps_resolution_and_rsu_7_needs_divisible_input():
    block = RSU(3, 4, 8, height=4, dilated=True)
    block.eval()
    assert list(block(_input((1, 3, 3, 5))).shape) == [1, 8, 3, 5]
    block7 = RSU(3, 4, 8, height=7)
    block7.eval()
    assert list(block7(_input((1, 3, 64, 128))).shape) == [1, 8, 64, 128]


def test_u2net_returns_fused_and_six_sides_in_training_only():
    model = create_model("u2netp", base_channels=8)
    x = _input((1, 3, 64, 64))
    model.train()
    outputs = model(x)
    assert len(outputs) == 7
    assert all(list(o.shape) == [1, 2, 64, 64] for o in outputs)
    # The fused output is the 1x1 fusion conv over the six full-size side outputs.
    refused = model.fuse(jt.concat(outputs[1:], dim=1))
    np.testing.assert_allclose(outputs[0].numpy(), refused.numpy(), rtol=1e-5, atol=1e-5)
    model.eval()
    out = model(x)
    assert not isinstance(out, (list, tuple)) and list(out.shape) == [1, 2, 64, 64]


def test_u2net_rejects_inputs_below_64_and_widths_not_multiple_of_4():
    model = create_model("u2netp", base_channels=8)
    model.eval()
    with pytest.raises(InputSizeError, match="minimum 64x64"):
        model(_input((1, 3, 48, 64)))
    with pytest.raises(ModelZooError, match="multiple of 4"):
        create_model("u2net", base_channels=6)


# ---- CS-Net -------------------------------------------------------------------------------------

def test_csnet_parameter_count_matches_the_reference():
    # Reference CSNet(classes=1, channels=3): 8,925,603 parameters, of which 524,800 are its unused
    # attention_fuse conv; ours drops that conv and the biases of convs followed by BatchNorm.
    model = create_model("csnet", num_classes=1)
    assert count_parameters(model) == 8_397_731
    assert count_parameters(model) + _bias_free_channels(model) + 1024 * 512 + 512 == 8_925_603


def test_attention_blocks_start_as_identity():
    x = _input((2, 16, 4, 4))
    spatial = SpatialAttention(16)
    spatial.eval()
    np.testing.assert_array_equal(spatial(x).numpy(), x.numpy())
    np.testing.assert_array_equal(ChannelAttention()(x).numpy(), x.numpy())


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_channel_attention_matches_its_formula():
    x = _input((1, 3, 2, 2), seed=1)
    out = ChannelAttention(gamma_init=0.5)(x).numpy()
    flat = x.numpy().reshape(3, 4)
    energy = flat @ flat.T
    expected = flat + 0.5 * _softmax(energy.max(axis=1, keepdims=True) - energy) @ flat
    np.testing.assert_allclose(out.reshape(3, 4), expected, rtol=1e-5, atol=1e-5)


def test_spatial_attention_matches_its_formula():
    block = SpatialAttention(16, gamma_init=2.0)
    block.eval()
    x = _input((1, 16, 3, 2), seed=2)
    query = block.query(x).numpy().reshape(2, 6).T       # pixels x channels // 8
    key = block.key(x).numpy().reshape(2, 6)
    value = block.value(x).numpy().reshape(16, 6)
    expected = x.numpy().reshape(16, 6) + 2.0 * value @ _softmax(query @ key).T
    np.testing.assert_allclose(block(x).numpy().reshape(16, 6), expected, rtol=1e-4, atol=1e-5)


def test_csnet_extra_flops_count_the_attention_products():
    model = create_model("csnet", base_channels=8)  # bottleneck 128 channels, query/key 16
    # 64x64 -> 4x4 = 16 bottleneck pixels: spatial 2*16*16*(16+128), channel 2*2*128*128*16.
    assert model.extra_flops((1, 3, 64, 64)) == 2 * 16 * 16 * 144 + 4 * 128 * 128 * 16
    # 72x88 is padded to 80x96 -> 5x6 = 30 pixels; the count scales with the batch.
    assert model.extra_flops((2, 3, 72, 88)) == 2 * (2 * 30 * 30 * 144 + 4 * 128 * 128 * 30)
    assert count_flops(model, (1, 3, 64, 64)) > model.extra_flops((1, 3, 64, 64))


# ---- squeeze & excitation and SCSE-UNet ---------------------------------------------------------

def test_se_hidden_widths():
    assert SqueezeExcite(64).reduce.out_channels == 4
    assert ChannelSE(64).reduce.out_channels == 32
    assert SqueezeExcite(8, reduction=16).reduce.out_channels == 1


def test_squeeze_excite_matches_its_formula():
    block = SqueezeExcite(4, reduction=2)
    x = _input((2, 4, 3, 3), seed=3)
    w1 = block.reduce.weight.numpy().reshape(2, 4)
    b1 = block.reduce.bias.numpy()
    w2 = block.expand.weight.numpy().reshape(4, 2)
    b2 = block.expand.bias.numpy()
    pooled = x.numpy().mean(axis=(2, 3))                  # N x C
    gate = 1 / (1 + np.exp(-(np.maximum(pooled @ w1.T + b1, 0) @ w2.T + b2)))
    np.testing.assert_allclose(block(x).numpy(), x.numpy() * gate[:, :, None, None], rtol=1e-5, atol=1e-6)


def test_spatial_se_gates_every_channel_alike():
    block = SpatialSE(3)
    _set(block.squeeze, weight=0.0, bias=np.log(3.0))      # sigmoid(log 3) = 3/4
    x = _input((1, 3, 4, 4))
    np.testing.assert_allclose(block(x).numpy(), 0.75 * x.numpy(), rtol=1e-6)


@pytest.mark.parametrize("combine, expected", [("add", lambda x: 0.5 * x + x),
                                               ("max", lambda x: np.maximum(0.5 * x, x))])
def test_scse_combines_channel_and_spatial_branches(combine, expected):
    block = SpatialChannelSE(4, combine=combine)
    _set(block.channel.reduce)
    _set(block.channel.expand)                              # channel gate sigmoid(0) = 1/2
    _set(block.spatial.squeeze, bias=30.0)                  # spatial gate ~1
    x = _input((1, 4, 3, 3))
    np.testing.assert_allclose(block(x).numpy(), expected(x.numpy()), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelZooError, match="combine"):
        SpatialChannelSE(4, combine="mean")


def test_scse_unet_adds_one_scse_per_stage_to_unet():
    # scSE on C channels: cSE C*C/2 + C/2 + C/2*C + C, sSE C + 1 -> C^2 + 2.5C + 1, on the five
    # encoder stages (64..1024) and four decoder stages (512..64) of the base-64 UNet.
    widths = [64, 128, 256, 512, 1024, 512, 256, 128, 64]
    extra = sum(c * c + 5 * c // 2 + 1 for c in widths)
    assert count_parameters(create_model("scse_unet")) - count_parameters(create_model("unet")) == extra == 1_752_265
