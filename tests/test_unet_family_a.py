"""Attention U-Net, R2U-Net / R2AttU-Net and DenseUNet: their blocks and family-specific behaviour."""
import math

import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model
from model_zoo.backend import jt
from model_zoo.layers import AttentionGate, DenseBlock, RecurrentConv, RecurrentResidualBlock, Transition


def _array(values):
    return jt.array(np.asarray(values, dtype="float32"))


def _input(shape, seed=0):
    return _array(np.random.RandomState(seed).randn(*shape))


def _fill(param, value):
    param.assign(jt.full(tuple(param.shape), value, dtype="float32"))


# --- attention gate ----------------------------------------------------------------------------

def test_attention_gate_coefficients_lie_in_unit_interval_at_skip_resolution():
    gate = AttentionGate(in_channels=4, gating_channels=8)
    alpha = gate.coefficients(_input((2, 4, 16, 12)), _input((2, 8, 8, 6), seed=1)).numpy()
    assert alpha.shape == (2, 1, 16, 12)
    assert ((alpha > 0) & (alpha < 1)).all()


@pytest.mark.parametrize("gating_value, expected", [(2.0, 1 / (1 + math.exp(-2.0))), (-2.0, 0.5)])
def test_attention_gate_is_sigmoid_of_rectified_sum(gating_value, expected):
    # One channel everywhere, unit 1x1 weights, zero biases, zero skip: alpha = sigmoid(relu(g)).
    gate = AttentionGate(in_channels=1, gating_channels=1, inter_channels=1)
    for conv in (gate.theta, gate.phi, gate.psi):
        _fill(conv.weight, 1.0)
    _fill(gate.phi.bias, 0.0)
    _fill(gate.psi.bias, 0.0)
    alpha = gate.coefficients(jt.zeros((1, 1, 4, 4)), jt.full((1, 1, 2, 2), gating_value)).numpy()
    np.testing.assert_allclose(alpha, np.full((1, 1, 4, 4), expected), rtol=1e-6)


def test_attention_gate_scales_the_skip_features():
    gate = AttentionGate(in_channels=3, gating_channels=6)
    _fill(gate.psi.weight, 0.0)
    _fill(gate.psi.bias, 0.0)  # alpha = sigmoid(0) = 0.5 whatever x and g
    x = _input((1, 3, 8, 8))
    np.testing.assert_allclose(gate(x, _input((1, 6, 4, 4), seed=1)).numpy(), 0.5 * x.numpy(), rtol=1e-6)


# --- recurrent residual units ------------------------------------------------------------------

def test_recurrent_conv_unrolls_one_shared_convolution():
    layer = RecurrentConv(4, steps=2)
    layer.eval()
    x = _input((1, 4, 8, 8))
    f = layer.conv
    np.testing.assert_allclose(layer(x).numpy(), f(x + f(x + f(x))).numpy(), rtol=1e-5, atol=1e-6)
    plain = RecurrentConv(4, steps=0)
    plain.eval()
    np.testing.assert_allclose(plain(x).numpy(), plain.conv(x).numpy(), rtol=1e-6)


def test_recurrence_adds_no_parameters():
    # 3x3 conv without bias (9 * 4 * 4) and BatchNorm scale and shift (2 * 4), for any step count.
    assert {count_parameters(RecurrentConv(4, steps=t)) for t in (0, 1, 2, 5)} == {9 * 16 + 8}


def test_recurrent_residual_block_shortcut_is_identity():
    block = RecurrentResidualBlock(3, 6)
    for layer in block.body:
        _fill(layer.conv[0].weight, 0.0)  # each recurrent layer now outputs relu(BN shift) = 0
    block.eval()
    x = _input((1, 3, 8, 8))
    np.testing.assert_allclose(block(x).numpy(), block.project(x).numpy(), rtol=1e-6)


def test_bad_recurrence_is_a_clear_error():
    with pytest.raises(ModelZooError, match="recurrent steps"):
        create_model("r2unet", base_channels=8, recurrence=-1)


# --- dense blocks ------------------------------------------------------------------------------

def test_dense_block_concatenates_input_and_growth():
    block = DenseBlock(in_channels=5, num_layers=3, growth_rate=4)
    x = _input((1, 5, 8, 8))
    out = block(x)
    assert block.out_channels == 5 + 3 * 4 and out.shape[1] == block.out_channels
    np.testing.assert_array_equal(out[:, :5].numpy(), x.numpy())


@pytest.mark.parametrize("size, expected", [
    (2, [[2.5]]),                      # a 2x2 map (nn.AvgPool2d would refuse it)
    (5, [[4.0, 6.0], [14.0, 16.0]]),   # odd size: the last row and column are dropped
])
def test_transition_averages_2x2_windows(size, expected):
    transition = Transition(1, 1)
    _fill(transition.conv[2].weight, 1.0)
    transition.eval()  # BatchNorm with running statistics 0 / 1: identity up to eps
    x = _array(np.arange(1, size * size + 1).reshape(1, 1, size, size))
    np.testing.assert_allclose(transition(x).numpy()[0, 0], expected, rtol=1e-4)


# --- DenseUNet ---------------------------------------------------------------------------------

def test_dense_unet_widths_follow_the_paper():
    model = create_model("dense_unet")
    assert model.encoder.channels == [96, 384, 768, 2112, 2208]
    assert [up.conv[0].out_channels for up in model.decoder] == [768, 384, 96, 96]  # H-DenseUNet Table 1
    assert model.final[1][0].out_channels == 64
    # Encoder parameters equal torchvision's densenet161().features / densenet121().features.
    assert count_parameters(model.encoder) == 26_472_000
    assert count_parameters(create_model("dense_unet_light").encoder) == 6_953_856


def test_dense_unet_feature_strides_and_smallest_input():
    model = create_model("dense_unet", growth_rate=4, block_layers=(2, 2, 2, 2), stem_channels=8, final_channels=8)
    model.eval()
    features = model.encoder(_input((1, 3, 64, 64)))
    assert [f.shape[2] for f in features] == [32, 16, 8, 4, 2]
    assert list(model(_input((1, 3, 32, 32))).shape) == [1, 2, 32, 32]


def test_dense_unet_rejects_a_single_block():
    with pytest.raises(ModelZooError, match="block_layers"):
        create_model("dense_unet", block_layers=(4,))


# --- Attention U-Net ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [3, 4])
def test_attention_unet_deep_supervision_outputs(depth):
    model = create_model("attention_unet", base_channels=4, depth=depth, deep_supervision=True)
    model.train()
    outputs = model(_input((1, 3, 40, 48)))
    assert len(outputs) == depth
    assert all(list(o.shape) == [1, 2, 40, 48] for o in outputs)
    model.eval()
    assert list(model(_input((1, 3, 40, 48))).shape) == [1, 2, 40, 48]


def test_attention_unet_min_input_grows_with_depth():
    assert create_model("attention_unet", base_channels=4, depth=5).min_input_size == 64


# --- parameter counts at the default configuration ---------------------------------------------

def _gate_params(c):
    # theta 2x2 (c -> c/2, no bias) + phi 1x1 (2c -> c/2, bias) + psi 1x1 (c/2 -> 1, bias)
    return 2 * c * c + (c * c + c // 2) + (c // 2 + 1)


def _r2unet_params(widths, in_channels=3, num_classes=2, attention=False):
    def unit(i, o):  # 1x1 projection with bias + two 3x3 recurrent layers (conv + BN)
        return i * o + o + 2 * (9 * o * o + 2 * o)
    total = unit(in_channels, widths[0]) + sum(unit(a, b) for a, b in zip(widths, widths[1:]))
    for c, coarse in zip(widths, widths[1:]):
        total += coarse * (coarse // 2) * 4 + coarse // 2 + unit(coarse // 2 + c, c)
        total += _gate_params(c) if attention else 0
    return total + widths[0] * num_classes + num_classes


def test_default_parameter_counts():
    widths = [64, 128, 256, 512, 1024]
    unet = count_parameters(create_model("unet"))
    assert count_parameters(create_model("attention_unet")) == unet + sum(_gate_params(c) for c in widths[:-1])
    assert count_parameters(create_model("r2unet")) == _r2unet_params(widths) == 35_602_050
    assert count_parameters(create_model("r2attunet")) == _r2unet_params(widths, attention=True) == 36_647_494
    assert count_parameters(create_model("attention_unet")) == 32_083_142
    assert count_parameters(create_model("dense_unet")) == 49_526_370
    assert count_parameters(create_model("dense_unet_light")) == 13_075_330
