"""Registry-wide model tests: every registered network is covered the moment it is registered."""
import numpy as np
import pytest

from conftest import materialise, zero_gradient_names
from jmedseg.checkpoint import load_checkpoint, save_checkpoint
from model_zoo import (InputSizeError, ModelZooError, UnknownModelError, count_parameters, create_model,
                       list_models, tiny_args)
from model_zoo.backend import jt

MODELS = list_models()


def build(name, in_channels=3, num_classes=2):
    jt.set_global_seed(0)
    return materialise(create_model(name, in_channels=in_channels, num_classes=num_classes, **tiny_args(name)))


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(64, 64), (72, 88)])
def test_forward_shape_and_finite(name, size):
    model = build(name, in_channels=1, num_classes=3)
    model.eval()
    out = model(_input((2, 1) + size))
    assert list(out.shape) == [2, 3, *size]
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_gradient(name):
    model = build(name)
    model.train()
    dead = sorted(zero_gradient_names(model, _input((2, 3, 64, 64))))
    assert not dead, f"parameters without gradient: {dead[:10]}"


@pytest.mark.parametrize("name", MODELS)
def test_train_eval_switching(name):
    x = _input((2, 3, 64, 64))
    # A bias right before a training-mode BatchNorm (e.g. CE-Net's RMP conv before a 1x1 conv and
    # BN) has an exactly zero gradient up to rounding; the same model never put in eval() tells
    # those apart from parameters that eval() froze.
    never_evaluated = build(name)
    never_evaluated.train()
    structural = zero_gradient_names(never_evaluated, x)
    model = build(name)
    model.eval()
    first = model(x).numpy()
    np.testing.assert_array_equal(model(x).numpy(), first, err_msg="eval mode must be deterministic")
    assert not isinstance(model(x), (list, tuple)), "eval mode must return the main output only"
    model.train()
    frozen = sorted(zero_gradient_names(model, x) - structural)
    assert not frozen, f"gradients stay frozen after eval() -> train(): {frozen[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    model = build(name)
    rng = np.random.RandomState(2)
    for p in model.parameters():  # BatchNorm statistics away from their initial 0 and 1
        if p.name().endswith("running_mean"):
            p.assign(p + rng.normal(0.0, 0.1, tuple(p.shape)).astype("float32"))
        elif p.name().endswith("running_var"):
            p.assign(p * rng.uniform(0.5, 1.5, tuple(p.shape)).astype("float32"))
    # Computed now, so this forward pass and the loaded model's run the same graph: left lazy, the
    # statistics' update fuses into the forward kernels, whose rounding can then differ (~1e-8).
    jt.sync(model.parameters())
    model.eval()
    x = _input((2, 3, 64, 64), seed=3)  # the batch size of the other tests: batch 1 compiles other kernels
    expected = model(x).numpy()
    meta = {"model": {"name": name, "args": model.model_args}}
    save_checkpoint(tmp_path / "m.npz", model, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "m.npz")
    assert loaded_meta["model"]["name"] == name
    np.testing.assert_array_equal(loaded(x).numpy(), expected)
    assert count_parameters(loaded) == count_parameters(model)


@pytest.mark.parametrize("name", MODELS)
def test_encoder_accessor(name):
    model = build(name)
    encoder = model.get_encoder()
    assert isinstance(encoder, jt.nn.Module)
    own = {id(p) for p in model.parameters()}
    enc_params = list(encoder.parameters())
    assert enc_params and all(id(p) in own for p in enc_params)


@pytest.mark.parametrize("name", MODELS)
def test_too_small_input_is_a_clear_error(name):
    model = build(name)
    model.eval()
    with pytest.raises(InputSizeError, match="smaller than the minimum"):
        model(_input((1, 3, 16, 16)))


def test_unet_parameter_count_matches_reference():
    # The reference PyTorch UNet (shared/bench/torch_unet_ref.py) has 7.76 M parameters at base 32.
    assert count_parameters(create_model("unet", base_channels=32)) == 7_763_074


def test_unet_bilinear_keeps_widths():
    model = create_model("unet", base_channels=8, upsampling="bilinear")
    model.eval()
    assert list(model(_input((1, 3, 40, 48))).shape) == [1, 2, 40, 48]


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean 'unet'"):
        create_model("unnet")


def test_bad_model_arguments():
    with pytest.raises(ModelZooError, match="unknown argument.*base_chanels"):
        create_model("unet", base_chanels=8)
    with pytest.raises(ModelZooError, match="num_classes must be a positive integer"):
        create_model("unet", num_classes=0)
    with pytest.raises(ModelZooError, match="upsampling"):
        create_model("unet", upsampling="nearest")
