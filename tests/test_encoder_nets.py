"""TernausNet, ResUNet and CE-Net: reference parameter counts, their blocks, encoder transfer."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model
from model_zoo.backbones import ResNet, VGG, resnet18
from model_zoo.backend import jt
from model_zoo.cenet import DACBlock, RMPBlock
from model_zoo.layers import LinkNetDecoder, LinkNetDecoderBlock


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


@pytest.mark.parametrize("name,expected", [
    # Authors' UNet11: VGG-11 features 9,220,480 + decoder 13,706,880 + 1x1 head 33.
    ("ternausnet", 22_927_393),
    # segmentation_models_pytorch Unet("resnet34"): encoder 21,284,672 + decoder 3,151,552 + head 145.
    ("resunet", 24_436_369),
    ("resunet18", 11_176_512 + 3_151_552 + 145),
    # Authors' CE_Net_: encoder 21,284,672 + DAC 7,342,080 + RMP 513 + decoder 333,491 + head 42,337.
    ("cenet", 29_003_093),
])
def test_default_parameter_count_matches_reference(name, expected):
    assert count_parameters(create_model(name, num_classes=1)) == expected


@pytest.mark.parametrize("name,encoder_type", [("ternausnet", VGG), ("resunet", ResNet), ("cenet", ResNet)])
def test_encoder_is_the_backbone_with_torchvision_names(name, encoder_type):
    model = create_model(name)
    assert isinstance(model.get_encoder(), encoder_type)
    keys = set(model.state_dict())
    expected = "encoder.features.0.weight" if encoder_type is VGG else "encoder.layer1.0.conv1.weight"
    assert expected in keys


def test_backbone_weights_transfer_into_the_encoder():
    # Self-supervised pretraining trains a standalone backbone; its state dict loads 1:1.
    source = resnet18(in_channels=1)
    model = create_model("resunet18", in_channels=1, decoder_channels=(16, 16, 8, 8, 8))
    model.get_encoder().load_state_dict(source.state_dict())
    source.eval()
    model.eval()
    x = _input((1, 1, 32, 32))
    np.testing.assert_array_equal(model.get_encoder()(x)[-1].numpy(), source(x)[-1].numpy())


def test_rmp_pooling_windows():
    x = jt.arange(36).float32().reshape(1, 1, 6, 6)  # value = 6 * row + col
    np.testing.assert_array_equal(RMPBlock._max_pool(x, 2).numpy()[0, 0], [[7, 9, 11], [19, 21, 23], [31, 33, 35]])
    assert RMPBlock._max_pool(x, 5).numpy().ravel().tolist() == [28]  # floor mode: the top-left 5x5 window
    assert RMPBlock._max_pool(x, 6).numpy().ravel().tolist() == [35]
    assert RMPBlock._max_pool(x[:, :, :2, :3], 5).numpy().ravel().tolist() == [8]  # window clipped to the map


def test_rmp_appends_one_map_per_pool_and_keeps_the_input():
    block = RMPBlock(4)
    x = _input((2, 4, 3, 3))
    out = block(x).numpy()
    assert out.shape == (2, 8, 3, 3)
    np.testing.assert_array_equal(out[:, 4:], x.numpy())
    # On a 3x3 map the 3, 5 and 6 windows cover it all: each of those levels is one constant.
    for level in (1, 2, 3):
        np.testing.assert_allclose(out[:, level], out[:, level, :1, :1] * np.ones((1, 3, 3)), rtol=1e-6)


def test_dac_receptive_field_is_19():
    block = DACBlock(2)
    for conv in (block.dilate1, block.dilate3, block.dilate5, block.conv1x1):
        conv.weight.assign(jt.ones(conv.weight.shape))
    x = np.zeros((1, 2, 25, 25), dtype="float32")
    x[0, :, 12, 12] = 1.0
    change = block(jt.array(x)).numpy() - x
    rows, cols = np.nonzero(change[0, 0] > 0)
    # Largest branch: dilations 1, 3, 5 in cascade reach 1 + 3 + 5 = 9 px each side.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 21, 3, 21)
    assert (change[0, 0, 3:22, 3:22] > 0).all()


def test_linknet_decoder_doubles_resolution_and_adds_skips():
    block = LinkNetDecoderBlock(16, 8)
    assert list(block(_input((1, 16, 5, 7))).shape) == [1, 8, 10, 14]
    assert block.conv1.out_channels == 4
    decoder = LinkNetDecoder(36, (8, 12, 16))
    skips = [_input((1, 8, 16, 16)), _input((1, 12, 8, 8)), _input((1, 16, 4, 4))]
    assert list(decoder(_input((1, 36, 2, 2)), skips).shape) == [1, 8, 32, 32]


def test_ternausnet_widths_and_smallest_input():
    model = create_model("ternausnet", num_filters=8)
    blocks = [model.center, model.dec5, model.dec4, model.dec3, model.dec2]
    assert [b[1].out_channels for b in blocks] + [model.dec1[0].out_channels] == [64, 64, 32, 16, 8, 8]
    assert model.dec5[0][0].in_channels == 64 + 512  # centre output + conv5 skip
    model.eval()
    # A 32 px input leaves a 2x2 conv5 map, which the centre max-pool must accept.
    assert model(_input((1, 3, 32, 32))).numpy().shape == (1, 2, 32, 32)


def test_resunet_decoder_widths_and_skips():
    model = create_model("resunet", decoder_channels=(40, 30, 20, 10, 5))
    # Inputs: deeper map + skip (layer3, layer2, layer1, stem, none) of ResNet-34.
    assert [b.conv[0][0].in_channels for b in model.decoder] == [512 + 256, 40 + 128, 30 + 64, 20 + 64, 10]
    assert model.head.in_channels == 5


@pytest.mark.parametrize("name", ["resunet", "cenet"])
def test_resnet_nets_reject_other_encoders(name):
    with pytest.raises(ModelZooError, match="encoder 'vgg11' gives features at strides"):
        create_model(name, encoder="vgg11")
    with pytest.raises(ModelZooError, match="unknown backbone 'resnet35'"):
        create_model(name, encoder="resnet35")


def test_bad_decoder_widths():
    with pytest.raises(ModelZooError, match="decoder_channels must be 5 positive integers"):
        create_model("resunet", decoder_channels=(64, 32))
