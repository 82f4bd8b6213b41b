"""DeepLab v2, DeepLab v3+ and PSPNet: parameter counts, ASPP, pyramid pooling, auxiliary head."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model
from model_zoo.backbones import ResNet
from model_zoo.backend import jt
from model_zoo.deeplab import ASPPClassifier
from model_zoo.layers import ASPP, ASPPPooling, PyramidPooling, adaptive_avg_pool2d

RESNET101, RESNET18 = 42_500_160, 11_176_512


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


def _conv_bn(cin, cout, k=1):
    return cin * cout * k * k + 2 * cout


@pytest.mark.parametrize("name,classes,expected", [
    # Caffe DeepLab v2 (ResNet-101, ASPP-L): backbone + four 3x3 convs 2048 -> 21 with bias.
    ("deeplabv2", 21, RESNET101 + 4 * (2048 * 9 * 21 + 21)),
    ("deeplabv2_r18", 2, RESNET18 + 4 * (512 * 9 * 2 + 2)),
    # jfzhang95/pytorch-deeplab-xception, ResNet-101 at 21 classes: 59,344,309, of which 512 are the
    # image-pooling BatchNorm that we replace by a 256-wide conv bias.
    ("deeplabv3plus", 21, 59_344_309 - 512 + 256),
    ("deeplabv3plus_r18", 2, RESNET18 + _conv_bn(512, 128) + 3 * _conv_bn(512, 128, 3) + 512 * 128 + 128
     + _conv_bn(5 * 128, 128) + _conv_bn(64, 48) + _conv_bn(176, 128, 3) + _conv_bn(128, 128, 3) + 128 * 2 + 2),
    # hszhao/semseg PSPNet-50 at 21 classes (aux head included): 49,081,578; its deep stem (three 3x3
    # convs, 128 wide into layer1) has 123,776 more, its 1x1-level BatchNorm 512 more than our bias.
    ("pspnet", 21, 49_081_578 - 123_776 - 512),
    ("pspnet_r18", 2, RESNET18 + (512 * 128 + 128) + 3 * _conv_bn(512, 128) + _conv_bn(1024, 128, 3) + 128 * 2 + 2
     + _conv_bn(256, 64, 3) + 64 * 2 + 2),
])
def test_parameter_count_matches_reference(name, classes, expected):
    assert count_parameters(create_model(name, num_classes=classes)) == expected


@pytest.mark.parametrize("name,strides", [("deeplabv2_r18", [2, 4, 8, 8, 8]), ("pspnet_r18", [2, 4, 8, 8, 8]),
                                          ("deeplabv3plus_r18", [2, 4, 8, 16, 16])])
def test_encoder_is_a_dilated_resnet_with_torchvision_names(name, strides):
    model = create_model(name)
    assert isinstance(model.get_encoder(), ResNet)
    assert model.get_encoder().strides == strides
    assert "encoder.layer4.1.conv2.weight" in model.state_dict()


def test_deeplabv3plus_rates_double_at_output_stride_8():
    os16 = create_model("deeplabv3plus_r18", aspp_channels=8, decoder_channels=8)
    os8 = create_model("deeplabv3plus_r18", aspp_channels=8, decoder_channels=8, output_stride=8)
    assert os16.aspp.rates == (6, 12, 18) and os8.aspp.rates == (12, 24, 36)
    assert [b[0].dilation for b in os16.aspp.branches[1:]] == [(6, 6), (12, 12), (18, 18)]
    assert os8.get_encoder().strides == [2, 4, 8, 8, 8] and os8.size_divisor == 8
    # Decoder input: ASPP output + the 48-channel projection of layer1 (64 channels on ResNet-18).
    assert os16.low_level[0].in_channels == 64 and os16.decoder[0][0].in_channels == 8 + 48


def test_adaptive_avg_pool_uses_pytorch_bins():
    x = jt.array((10 * np.arange(4)[:, None] + np.arange(5)[None, :]).astype("float32").reshape(1, 1, 4, 5))
    # Rows 0..3 into 6 bins: [0], [0,1], [1], [2], [2,3], [3]; columns 0..4: [0], [0,1], [1,2], [2,3], [3,4], [4].
    rows = np.array([0, 5, 10, 20, 25, 30], dtype="float32")
    cols = np.array([0, 0.5, 1.5, 2.5, 3.5, 4], dtype="float32")
    np.testing.assert_allclose(adaptive_avg_pool2d(x, 6).numpy()[0, 0], rows[:, None] + cols[None, :], rtol=1e-6)
    x = jt.arange(36).float32().reshape(1, 1, 6, 6)  # 6 * row + col
    np.testing.assert_allclose(adaptive_avg_pool2d(x, 2).numpy()[0, 0], [[7, 10], [25, 28]], rtol=1e-6)
    np.testing.assert_allclose(adaptive_avg_pool2d(x, 1).numpy().ravel(), [17.5], rtol=1e-6)


def test_pyramid_pooling_levels():
    block = PyramidPooling(4, bins=(1, 2))
    block.eval()
    assert block.out_channels == 4 + 2 * 2
    x = _input((2, 4, 5, 7))
    out = block(x).numpy()
    assert out.shape == (2, 8, 5, 7)
    np.testing.assert_array_equal(out[:, :4], x.numpy())
    # The global level: ReLU(W · mean(x) + b), the same at every pixel.
    conv = block.levels[0][0]
    weight, bias = conv.weight.numpy()[:, :, 0, 0], conv.bias.numpy()
    expected = np.maximum(x.numpy().mean(axis=(2, 3)) @ weight.T + bias, 0)
    np.testing.assert_allclose(out[:, 4:6], np.broadcast_to(expected[:, :, None, None], (2, 2, 5, 7)), atol=1e-5)
    # The 2x2 level: PyTorch bins of 5 rows are 0-2 and 2-4, of 7 columns 0-3 and 3-6; eval-mode
    # BatchNorm at its initial statistics divides by sqrt(1 + eps). Bilinear upsampling without
    # corner alignment copies the pooled corners to the output corners.
    conv = block.levels[1][0]
    weight = conv.weight.numpy()[:, :, 0, 0]
    pooled = {(0, 0): x.numpy()[:, :, 0:3, 0:4], (-1, -1): x.numpy()[:, :, 2:5, 3:7]}
    for (r, c), window in pooled.items():
        expected = np.maximum(window.mean(axis=(2, 3)) @ weight.T / np.sqrt(1 + 1e-5), 0)
        np.testing.assert_allclose(out[:, 6:8, r, c], expected, atol=1e-5)


def test_pyramid_pooling_bins_larger_than_the_map():
    # A 32 px input at output stride 8 gives a 4x4 map, pooled to 6x6 by the finest level.
    out = PyramidPooling(8, bins=(1, 2, 3, 6))(_input((2, 8, 4, 4)))
    assert list(out.shape) == [2, 16, 4, 4] and np.isfinite(out.numpy()).all()


def test_aspp_pooling_has_no_batchnorm_and_learns_at_batch_one():
    branch = ASPPPooling(3, 2)
    branch.conv.bias.assign(jt.full((2,), 10.0))  # keep the ReLU open
    branch.train()
    x = _input((1, 3, 4, 6))
    out = branch(x)
    weight, bias = branch.conv.weight.numpy()[:, :, 0, 0], branch.conv.bias.numpy()
    expected = np.maximum(x.numpy().mean(axis=(2, 3)) @ weight.T + bias, 0)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(expected[:, :, None, None], (1, 2, 4, 6)), rtol=1e-5)
    # With BatchNorm here a batch of 1 would give a constant and no gradient to the conv.
    grads = jt.grad((out * _input((1, 2, 4, 6), seed=1)).sum(), [branch.conv.weight])
    assert np.abs(grads[0].numpy()).sum() > 0


def test_aspp_concatenates_five_branches():
    block = ASPP(8, 4, rates=(1, 2, 3))
    assert [b[0].kernel_size for b in block.branches] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert block.project[0][0].in_channels == 5 * 4
    block.train()
    out = block(_input((2, 8, 4, 4)))
    assert list(out.shape) == [2, 4, 4, 4] and np.isfinite(out.numpy()).all()


def test_aspp_classifier_sums_dilated_branches():
    head = ASPPClassifier(1, 1, rates=(2, 5))
    for conv in head.branches:
        conv.weight.assign(jt.ones(conv.weight.shape))
    x = np.zeros((1, 1, 21, 21), dtype="float32")
    x[0, 0, 10, 10] = 1.0
    out = head(jt.array(x)).numpy()[0, 0]
    # Each branch copies the impulse to the centre and the 8 taps at its dilation; the centre gets both.
    rows, cols = np.nonzero(out)
    assert set(rows) == set(cols) == {5, 8, 10, 12, 15}
    assert out[10, 10] == 2 and out[8, 12] == 1 and out[5, 15] == 1 and out[8, 15] == 0


def test_pspnet_aux_head_in_training_only():
    model = create_model("pspnet_r18", head_channels=8, aux_channels=8)
    model.train()
    outputs = model(_input((2, 3, 40, 48)))
    assert isinstance(outputs, list) and [list(o.shape) for o in outputs] == [[2, 2, 40, 48]] * 2
    model.eval()
    assert list(model(_input((1, 3, 40, 48))).shape) == [1, 2, 40, 48]
    plain = create_model("pspnet_r18", head_channels=8, aux_channels=8, aux_head=False)
    plain.train()
    assert not isinstance(plain(_input((2, 3, 32, 32))), list)
    # The auxiliary head: 3x3 conv-BN 256 -> 8 and a 1x1 classifier 8 -> 2.
    assert count_parameters(model) - count_parameters(plain) == 256 * 8 * 9 + 16 + 8 * 2 + 2


def test_pspnet_aux_loss_reaches_the_aux_head_and_backbone():
    model = create_model("pspnet_r18", head_channels=8, aux_channels=8)
    model.train()
    _, aux = model(_input((2, 3, 32, 32)))
    params = [p for p in model.parameters() if not p.name().endswith(("running_mean", "running_var"))]
    grads = dict(zip([p.name() for p in params], jt.grad((aux * _input((2, 2, 32, 32), seed=1)).mean(), params)))
    assert all(np.abs(g.numpy()).sum() > 0 for n, g in grads.items() if n.startswith("aux_head."))
    assert np.abs(grads["encoder.layer3.0.conv1.weight"].numpy()).sum() > 0
    # layer4, the pyramid pooling and the main head lie after layer3: the auxiliary loss skips them.
    assert np.abs(grads["encoder.layer4.0.conv1.weight"].numpy()).sum() == 0
    assert np.abs(grads["head.2.weight"].numpy()).sum() == 0


@pytest.mark.parametrize("name,args", [("deeplabv3plus_r18", {"aspp_channels": 8, "decoder_channels": 8}),
                                       ("pspnet_r18", {"head_channels": 8, "aux_channels": 8}), ("deeplabv2_r18", {})])
def test_batch_one_eval_and_batch_two_training_are_finite(name, args):
    # BatchNorm on 1x1 pooled maps would be degenerate here; the global branches have none.
    model = create_model(name, **args)
    model.train()
    out = model(_input((2, 3, 64, 64)))
    for o in out if isinstance(out, list) else [out]:
        assert np.isfinite(o.numpy()).all()
    model.eval()
    out = model(_input((1, 3, 64, 64), seed=2)).numpy()
    assert out.shape == (1, 2, 64, 64) and np.isfinite(out).all()


def test_bad_arguments():
    with pytest.raises(ModelZooError, match="encoder must be one of"):
        create_model("deeplabv3plus", encoder="vgg11")
    with pytest.raises(ModelZooError, match="encoder must be one of"):
        create_model("pspnet", encoder="vgg16")
    with pytest.raises(ModelZooError, match="output_stride must be 8 or 16"):
        create_model("deeplabv3plus_r18", output_stride=32)
    with pytest.raises(ModelZooError, match="bins must be positive integers"):
        create_model("pspnet_r18", bins=(1, 0))
    with pytest.raises(ModelZooError, match="rates must be positive integers"):
        create_model("deeplabv2_r18", rates=())
