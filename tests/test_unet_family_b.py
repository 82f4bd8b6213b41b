"""UNet++, UNet 3+ and MultiResUNet: deep supervision, block behaviour and paper parameter counts."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model
from model_zoo.backend import jt
from model_zoo.multiresunet import ConvShiftBN, multires_widths
from model_zoo.unet3p import FullScaleDecoderStage


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


def _running_statistics(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters() if p.name().endswith(("running_mean", "running_var")))


@pytest.mark.parametrize("name, depth, expected_outputs", [
    ("unetpp", 4, 4),   # X^{0,4} (main), X^{0,1}, X^{0,2}, X^{0,3}
    ("unetpp", 2, 2),   # X^{0,2} (main), X^{0,1}
    ("unet3p", 4, 5),   # d1 (main), d2, d3, d4 and the bottleneck d5
])
def test_deep_supervision_outputs_in_training_only(name, depth, expected_outputs):
    jt.set_global_seed(0)
    model = create_model(name, in_channels=1, num_classes=3, base_channels=4, depth=depth, deep_supervision=True)
    x = _input((2, 1, 32, 48))
    model.train()
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) == expected_outputs
    assert all(list(o.shape) == [2, 3, 32, 48] for o in outputs)
    # Each side head is trained: a loss on the outputs reaches every parameter, side heads included.
    params = [p for p in model.parameters() if not p.name().endswith(("running_mean", "running_var"))]
    grads = jt.grad(sum((o * o).mean() for o in outputs), params)
    assert all(np.abs(g.numpy()).sum() > 0 for g in grads)
    model.eval()
    main = model(x)
    assert not isinstance(main, (list, tuple)) and list(main.shape) == [2, 3, 32, 48]


def test_unetpp_without_deep_supervision_has_one_head():
    model = create_model("unetpp", base_channels=4)
    model.train()
    assert len(model.heads) == 1 and not isinstance(model(_input((1, 3, 32, 32))), list)


def test_unetpp_nodes_see_all_earlier_nodes_of_their_level():
    # X^{i,j} concatenates j nodes of width 4 * 2**i with X^{i+1,j-1} upsampled to that width.
    model = create_model("unetpp", base_channels=4)
    for j, column in enumerate(model.nodes, start=1):
        assert len(column) == 5 - j
        for i, node in enumerate(column):
            assert node.conv[0][0].in_channels == (j + 1) * 4 * 2 ** i


def test_unetpp_parameter_count_matches_reference():
    # The authors' Keras UNet++ (1 input channel, 1 class) has 9,041,601 parameters. Each of its
    # 3,648 conv channels (2 x (32+64+128+256+512) in the encoder, 2 x (4x32 + 3x64 + 2x128 + 256)
    # in the nested nodes) has a bias; ours has a BatchNorm scale and shift instead: one more each.
    model = create_model("unetpp", in_channels=1, num_classes=1)
    assert count_parameters(model) == 9_041_601 + 3_648


def test_full_scale_stage_gathers_every_scale():
    stage = FullScaleDecoderStage(level=1, source_channels=[4, 8, 20, 20, 64], skip_channels=4)
    sources = [_input((1, c, 32 // 2 ** k, 48 // 2 ** k), seed=k) for k, c in enumerate([4, 8, 20, 20, 64])]
    out = stage(sources).numpy()
    assert out.shape == (1, 20, 16, 24)


def test_unet3p_decoder_stages_are_320_channels_at_default_width():
    model = create_model("unet3p")
    assert [stage.fuse[0].in_channels for stage in model.stages] == [320] * 4
    assert [len(stage.projections) for stage in model.stages] == [5] * 4


def test_unet3p_parameter_count_matches_reference():
    # Reference code (3 input channels, 1 class): 26,971,777 (the paper's 26.97 M). Our 26 convs
    # followed by BatchNorm drop their redundant bias: 2 x (64+128+256+512+1024) in the encoder,
    # 4 x (5 x 64 + 320) in the decoder = 3,968 + 2,560 = 6,528.
    assert count_parameters(create_model("unet3p", num_classes=1)) == 26_971_777 - 6_528


@pytest.mark.parametrize("name", ["unetpp", "unet3p", "multiresunet"])
def test_minimum_input_size(name):
    model = create_model(name, base_channels=8)
    model.eval()
    out = model(_input((1, 3, 32, 32))).numpy()  # numpy() runs the lazy graph, pools included
    assert out.shape == (1, 2, 32, 32) and np.isfinite(out).all()


def test_multires_widths_follow_the_reference_factors():
    # W = 1.67 U split as int(0.167 W), int(0.333 W), int(0.5 W).
    assert multires_widths(32) == (8, 17, 26)        # W = 53.44
    assert multires_widths(512) == (142, 284, 427)   # W = 855.04 (W/3 would give 285)


def test_multiresunet_structure():
    model = create_model("multiresunet")
    assert [block.out_channels for block in model.encoder.stages] == [51, 105, 212, 426, 853]
    assert [len(path.convs) for path in model.res_paths] == [4, 3, 2, 1]
    assert [path.convs[-1].conv.out_channels for path in model.res_paths] == [32, 64, 128, 256]


def test_multiresunet_parameter_count_matches_paper():
    # The paper's 7,262,750 (Keras total) = 7,238,228 trainable + 24,522 BatchNorm running statistics.
    # Our head is a biased 1x1 conv instead of conv + BatchNorm: same learnable count, 2 fewer statistics.
    model = create_model("multiresunet", in_channels=3, num_classes=1)
    assert count_parameters(model) == 7_238_228
    assert count_parameters(model) + _running_statistics(model) == 7_262_750 - 2


def test_conv_shift_bn_learns_a_shift_but_no_scale():
    jt.set_global_seed(0)
    block = ConvShiftBN(3, 2, 3, relu=False)
    assert sorted(p.name().split(".")[-1] for p in block.parameters()
                  if not p.name().endswith(("running_mean", "running_var"))) == ["shift", "weight"]
    block.shift.assign(jt.array(np.array([1.0, -2.0], dtype="float32")))
    block.train()
    out = block(_input((4, 3, 16, 16))).numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), [1.0, -2.0], atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), [1.0, 1.0], atol=1e-3)


@pytest.mark.parametrize("name, kwargs, match", [
    ("unetpp", {"depth": 0}, "depth and base_channels must be positive"),
    ("unet3p", {"base_channels": 0}, "depth and base_channels must be positive"),
    ("multiresunet", {"base_channels": 2}, "alpha \\* base_channels >= 6"),
])
def test_bad_arguments(name, kwargs, match):
    with pytest.raises(ModelZooError, match=match):
        create_model(name, **kwargs)
