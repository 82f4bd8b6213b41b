"""SegNet, D-LinkNet, HarDNet-68 and HarDNet-MSEG: reference parameter counts and their blocks."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model
from model_zoo.backbones import create_backbone, vgg16_bn
from model_zoo.backbones.hardnet import HarDBlock, HarDNet, MaxPool2x2, harmonic_links
from model_zoo.backend import jt
from model_zoo.dlinknet import DilatedCenterBlock
from model_zoo.hardnet_mseg import PartialDecoder, ReceptiveFieldBlock
from model_zoo.segnet import SegNetEncoder, max_pool2x2_with_indices

nn = jt.nn


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


def _conv_bn(cin, cout, k=3):
    """Parameters of a bias-free k x k conv followed by BatchNorm (weight and bias)."""
    return cin * cout * k * k + 2 * cout


# ---------------------------------------------------------------- SegNet

def test_segnet_parameter_count():
    decoder = (3 * _conv_bn(512, 512)                                   # stage 5
               + 2 * _conv_bn(512, 512) + _conv_bn(512, 256)            # stage 4
               + 2 * _conv_bn(256, 256) + _conv_bn(256, 128)            # stage 3
               + _conv_bn(128, 128) + _conv_bn(128, 64)                 # stage 2
               + _conv_bn(64, 64) + (64 * 2 * 9 + 2))                   # stage 1 + classifier
    # Encoder: torchvision's vgg16_bn features, 14,723,136 parameters.
    assert count_parameters(create_model("segnet")) == 14_723_136 + decoder == 29_440_450


def test_segnet_encoder_has_torchvision_vgg16_bn_names():
    ours = {k: list(v.shape) for k, v in SegNetEncoder().state_dict().items()}
    assert ours == {k: list(v.shape) for k, v in vgg16_bn().state_dict().items()}
    # Conv positions in torchvision's vgg16_bn.features (conv, BN, ReLU per layer; a pool per stage).
    convs = sorted(int(k.split(".")[1]) for k, shape in ours.items() if len(shape) == 4)
    assert convs == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert isinstance(create_model("segnet", base_channels=4).get_encoder(), SegNetEncoder)


def test_segnet_decoder_mirrors_the_encoder():
    model = create_model("segnet", base_channels=8)
    widths = [[block[0].out_channels for block in stage.convs] for stage in model.decoder]
    assert widths == [[64, 64, 64], [64, 64, 32], [32, 32, 16], [16, 8], [8]]
    assert (model.classifier.in_channels, model.classifier.out_channels) == (8, 2)


def test_max_pool_with_indices_by_hand():
    x = jt.arange(16).float32().reshape(1, 1, 4, 4)  # value = flat position
    pooled, indices = max_pool2x2_with_indices(x)
    np.testing.assert_array_equal(pooled.numpy()[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(indices.numpy()[0, 0], [[5, 7], [13, 15]])
    # Ties pick the first element of each window; a 2x2 map (refused by nn.MaxPool2d) works.
    _, tied = max_pool2x2_with_indices(jt.zeros((1, 1, 4, 4)))
    np.testing.assert_array_equal(tied.numpy()[0, 0], [[0, 2], [8, 10]])
    pooled, indices = max_pool2x2_with_indices(jt.array([[[[1.0, 3.0], [2.0, 0.0]]]]))
    assert (pooled.item(), indices.item()) == (3.0, 1)
    with pytest.raises(ModelZooError, match="even height and width"):
        max_pool2x2_with_indices(jt.zeros((1, 1, 4, 5)))


def test_max_pool_with_indices_matches_jittor_pool_and_unpool():
    x = _input((2, 3, 6, 8))
    pooled, indices = max_pool2x2_with_indices(x)
    expected, expected_indices = nn.MaxPool2d(2, stride=2, return_indices=True)(x)
    np.testing.assert_array_equal(pooled.numpy(), expected.numpy())
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
    unpooled = nn.MaxUnpool2d(2, stride=2)(pooled, indices).numpy()
    xs = x.numpy()
    np.testing.assert_array_equal(unpooled, np.where(unpooled != 0, xs, 0))
    assert (unpooled != 0).sum() == pooled.numel()  # one maximum per window is put back


def test_max_pool_gradient_reaches_only_the_selected_element():
    x = jt.zeros((1, 1, 2, 4))
    pooled, _ = max_pool2x2_with_indices(x)
    grad = jt.grad(pooled.sum(), x).numpy()[0, 0]
    np.testing.assert_array_equal(grad, [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_segnet_encoder_encode_returns_five_index_maps():
    encoder = SegNetEncoder(in_channels=1, base_channels=4)
    bottom, indices = encoder.encode(_input((1, 1, 64, 32)))
    assert list(bottom.shape) == [1, 32, 2, 1]
    assert [list(i.shape[2:]) for i in indices] == [[32, 16], [16, 8], [8, 4], [4, 2], [2, 1]]
    assert [f.shape[1] for f in encoder(_input((1, 1, 64, 32)))] == [4, 8, 16, 32, 32]


@pytest.mark.parametrize("name", ["segnet", "hardnet_mseg", "dlinknet"])
def test_smallest_and_non_square_inputs(name):
    # 32 px leaves a 2x2 map before the last 2x2 pool of SegNet and HarDNet, which Jittor's MaxPool2d refuses.
    model = create_model(name, **{"segnet": {"base_channels": 4}, "hardnet_mseg": {"decoder_channels": 4},
                                  "dlinknet": {"encoder": "resnet18"}}[name])
    model.eval()
    assert model(_input((1, 3, 32, 48))).numpy().shape == (1, 2, 32, 48)


# ---------------------------------------------------------------- D-LinkNet

@pytest.mark.parametrize("name,encoder,expected", [("dlinknet", 21_284_672, 31_096_129),
                                                   ("dlinknet_r18", 11_176_512, 20_987_969)])
def test_dlinknet_parameter_count_matches_reference(name, encoder, expected):
    center = 4 * (512 * 512 * 9 + 512)
    # LinkNet decoder blocks (conv1 to in/4, deconv, conv3 to out; biases and BN): 512->256 ... 64->64.
    decoder = 247_296 + 62_208 + 15_744 + 4_640
    head = (64 * 32 * 16 + 32) + (32 * 32 * 9 + 32) + (32 * 9 + 1)
    # With ResNet-34 this is the authors' DinkNet34 at one class.
    assert count_parameters(create_model(name, num_classes=1)) == encoder + center + decoder + head == expected


def test_dilated_center_block_receptive_field_and_identity_start():
    block = DilatedCenterBlock(1)
    assert all(float(np.abs(conv.bias.numpy()).sum()) == 0 for conv in block.convs)
    x = np.zeros((1, 1, 41, 41), dtype="float32")
    x[0, 0, 20, 20] = 1.0
    for conv in block.convs:
        conv.weight.assign(jt.zeros(conv.weight.shape))
    np.testing.assert_array_equal(block(jt.array(x)).numpy(), x)  # zero convs: the identity
    for conv in block.convs:
        conv.weight.assign(jt.ones(conv.weight.shape))
    change = block(jt.array(x)).numpy()[0, 0] - x[0, 0]
    rows, cols = np.nonzero(change)
    # Cascade of dilations 1, 2, 4, 8 reaches 1 + 2 + 4 + 8 = 15 px each side.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 35, 5, 35)
    assert change[20, 20] > 0 and change[20, 21] > 0  # the dilation-1 branch covers the neighbours


def test_dlinknet_rejects_bad_arguments():
    with pytest.raises(ModelZooError, match="encoder 'vgg11' gives features at strides"):
        create_model("dlinknet", encoder="vgg11")
    with pytest.raises(ModelZooError, match="dilations must be positive integers"):
        create_model("dlinknet", dilations=(1, 0))


# ---------------------------------------------------------------- HarDNet-68

def test_harmonic_links():
    assert harmonic_links(1) == [0]
    assert harmonic_links(2) == [1, 0]
    assert harmonic_links(6) == [5, 4]
    assert harmonic_links(8) == [7, 6, 4, 0]
    assert harmonic_links(12) == [11, 10, 8]
    assert harmonic_links(16) == [15, 14, 12, 8, 0]


def test_hardblock_widths_of_hardnet68_first_block():
    # Growth 14, multiplier 1.7: 14 * 1.7**(links - 1) rounded to even: 14, 24 (23.8), 40 (40.46), 68 (68.78).
    block = HarDBlock(64, 14, 1.7, 8)
    assert block.out_widths == [14, 24, 14, 40, 14, 24, 14, 68]
    assert block.in_widths == [64, 14 + 64, 24, 14 + 24 + 64, 40, 14 + 40, 24, 14 + 24 + 40 + 64]
    assert block.out_channels == 14 + 14 + 14 + 14 + 68  # odd layers and the last
    assert list(block(_input((1, 64, 5, 6))).shape) == [1, 124, 5, 6]


def test_hardnet68_features_and_official_names():
    encoder = create_backbone("hardnet68", in_channels=1)
    assert isinstance(encoder, HarDNet)
    assert (encoder.channels, encoder.strides) == ([64, 128, 320, 640, 1024], [2, 4, 8, 16, 32])
    features = encoder(_input((1, 1, 64, 96)))
    assert [list(f.shape[1:]) for f in features] == [[64, 32, 48], [128, 16, 24], [320, 8, 12], [640, 4, 6],
                                                     [1024, 2, 3]]
    state = encoder.state_dict()
    assert list(state["base.0.conv.weight"].shape) == [32, 1, 3, 3]
    assert list(state["base.3.layers.7.conv.weight"].shape) == [68, 142, 3, 3]
    assert list(state["base.4.conv.weight"].shape) == [128, 124, 1, 1]
    assert "base.15.norm.running_var" in state
    assert not [k for k in state if k.startswith(("base.2.", "base.5.", "base.10.", "base.13.", "base.16."))]
    # The authors' HarDNet68 has 17,565,348 parameters (paper: 17.6 M) with the 1,025,000 of its
    # ImageNet classifier, which we leave out; one input channel saves 2 x 32 x 9 stem weights.
    assert count_parameters(encoder) == 17_565_348 - 1_025_000 - 2 * 32 * 9


def test_maxpool2x2_matches_jittor_and_accepts_a_2x2_map():
    x = _input((1, 2, 4, 6))
    np.testing.assert_array_equal(MaxPool2x2()(x).numpy(), nn.MaxPool2d(2, stride=2)(x).numpy())
    assert MaxPool2x2()(jt.array([[[[1.0, 4.0], [3.0, 2.0]]]])).item() == 4.0
    assert list(MaxPool2x2()(_input((1, 1, 5, 7))).shape) == [1, 1, 2, 3]  # floor mode


# ---------------------------------------------------------------- HarDNet-MSEG

def test_receptive_field_block_parameters_and_shape():
    block = ReceptiveFieldBlock(12, 4)
    branch0 = _conv_bn(12, 4, 1)
    # Branch k: 1x1, 1 x s and s x 1 (4 * 4 * s weights + BN each), 3x3 dilated, for s = 3, 5, 7.
    branches = [branch0 + 2 * (4 * 4 * s + 8) + _conv_bn(4, 4) for s in (3, 5, 7)]
    conv_cat, conv_res = _conv_bn(16, 4), branch0
    assert count_parameters(block) == branch0 + sum(branches) + conv_cat + conv_res == 1848
    out = block(_input((2, 12, 6, 5))).numpy()
    assert out.shape == (2, 4, 6, 5) and (out >= 0).all()  # ends in a ReLU


def test_partial_decoder_resolution_and_gating():
    decoder, fine = PartialDecoder(4, 3), PartialDecoder(4, 3, fine_level=True)
    decoder.eval()  # before any pass, so BatchNorm keeps its initial statistics (used below)
    fine.eval()
    x1, x2, x3, x4 = (_input((1, 4, s, s), seed=s) for s in (2, 4, 8, 16))
    assert list(decoder(x1, x2, x3).shape) == [1, 3, 8, 8]
    assert list(fine(x1, x2, x3, x4).shape) == [1, 3, 16, 16]
    with pytest.raises(ModelZooError, match="takes 4 inputs"):
        fine(x1, x2, x3)
    # Fresh BatchNorm in eval mode maps 0 to 0, so a zero deepest map zeroes every ConvBN of it:
    # x2 and x3 only enter multiplied by it, x4 (altered variant) is concatenated, not gated.
    zero = jt.zeros(x1.shape)
    np.testing.assert_array_equal(decoder(zero, x2, x3).numpy(), decoder(zero, 5 * x2, -x3).numpy())
    np.testing.assert_array_equal(fine(zero, x2, x3, x4).numpy(), fine(zero, 5 * x2, -x3, x4).numpy())
    assert not np.allclose(fine(zero, x2, x3, x4).numpy(), fine(zero, x2, x3, 2 * x4).numpy())


def test_hardnet_mseg_parameter_counts():
    rfb = {c: 160 * c + 96_192 for c in (128, 320, 640, 1024)}  # ReceptiveFieldBlock(c, 32)
    assert count_parameters(ReceptiveFieldBlock(320, 32)) == rfb[320]
    decoder = 4 * _conv_bn(32, 32) + 2 * _conv_bn(64, 64) + 2 * _conv_bn(96, 96) + (96 + 1)
    backbone = count_parameters(create_backbone("hardnet68"))
    mseg = count_parameters(create_model("hardnet_mseg", num_classes=1))
    assert mseg == backbone + rfb[320] + rfb[640] + rfb[1024] + decoder == 17_423_837
    # The altered variant: an RFB on the 128-channel stride-4 features, a fourth level (3c -> 3c
    # upsampling conv, 4c fusion conv) and a 4c instead of 3c final conv.
    extra = rfb[128] + _conv_bn(96, 96) + _conv_bn(128, 128) + (_conv_bn(128, 128) - _conv_bn(96, 96)) + 32
    assert count_parameters(create_model("hardnet_mseg_alt", num_classes=1)) == mseg + extra


def test_hardnet_mseg_rfbs_read_the_right_strides():
    model = create_model("hardnet_mseg", decoder_channels=4)
    alt = create_model("hardnet_mseg_alt", decoder_channels=4)
    assert [r.conv_res.conv.in_channels for r in model.rfbs] == [320, 640, 1024]
    assert [r.conv_res.conv.in_channels for r in alt.rfbs] == [128, 320, 640, 1024]
    assert (model.detail_stride, alt.detail_stride) == (8, 4)
    assert isinstance(model.get_encoder(), HarDNet)
