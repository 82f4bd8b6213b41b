"""Spatial transformer front end: coordinate conventions, inverse round trip, identity start, gradients,
and its penalty and drift log in training."""
import math

import numpy as np
import pytest

from jmedseg.config import load_config
from jmedseg.engine import Trainer
from model_zoo import create_model
from model_zoo.backend import jt
from model_zoo.stn import STNSegmenter, invert_affine, snap_to_identity, wrap_with_stn

nn = jt.nn


class PassThrough(nn.Module):
    """An "identity segmenter": returns its input as logits and remembers it."""

    size_divisor = 1
    min_input_size = 1

    def execute(self, x):
        self.seen = x
        return x


class TwoOutputs(PassThrough):
    """Deep-supervision stand-in: ``[x, 2x]`` in training mode."""

    def execute(self, x):
        return [x, 2 * x] if self.is_training() else x


def set_theta(stn, theta):
    """Make the localisation net predict ``theta`` (2 x 3) for every input."""
    head = stn.localisation.theta
    head.weight = jt.zeros(head.weight.shape, dtype="float32")
    head.bias = jt.array(np.asarray(theta, np.float32).ravel())


def smooth_image(h=72, w=88, channels=3):
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    planes = [np.sin(2 * math.pi * (1.0 + c) * xx) * np.cos(2 * math.pi * 1.5 * yy) + yy for c in range(channels)]
    return np.stack(planes)[None].astype(np.float32)


def test_translation_follows_the_affine_grid_convention():
    # tx = 0.5 (normalised) is 0.5 * 88 / 2 = 22 pixels: the segmenter sees x[..., j + 22] at column j.
    stn = STNSegmenter(PassThrough(), in_channels=3, localisation_size=32)
    set_theta(stn, [[1, 0, 0.5], [0, 1, 0]])
    x = np.random.default_rng(0).standard_normal((1, 3, 72, 88)).astype(np.float32)
    out = stn(jt.array(x)).numpy()
    seen = stn.model.seen.numpy()
    np.testing.assert_allclose(seen[..., :66], x[..., 22:], atol=1e-4)
    np.testing.assert_allclose(seen[..., 66:], 0, atol=1e-4)  # sampled outside the image: zero padding
    # Back in the input frame: the covered columns are the input, the rest uniform logits (0).
    np.testing.assert_allclose(out[..., 22:], x[..., 22:], atol=1e-4)
    np.testing.assert_allclose(out[..., :22], 0, atol=1e-4)


def test_round_trip_with_rotation_and_scale_recovers_the_input():
    angle, scale = math.radians(15), 0.8
    theta = [[scale * math.cos(angle), -scale * math.sin(angle), 0.05],
             [scale * math.sin(angle), scale * math.cos(angle), -0.1]]
    stn = STNSegmenter(PassThrough(), in_channels=3, localisation_size=32)
    set_theta(stn, theta)
    x = smooth_image()
    out = stn(jt.array(x)).numpy()
    assert out.shape == (1, 3, 72, 88)
    centre = (slice(None), slice(None), slice(18, 54), slice(22, 66))
    assert np.abs(out[centre] - x[centre]).max() < 0.05
    assert np.abs(out[..., 0, 0]).max() == 0  # corners were cropped away by the zoom: zero logits


def test_invert_affine_matches_the_homogeneous_inverse():
    rng = np.random.default_rng(1)
    theta = rng.uniform(-1, 1, (4, 2, 3)).astype(np.float32) + np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    inverse = invert_affine(jt.array(theta)).numpy()
    for t, inv in zip(theta, inverse):
        full = np.vstack([t, [0, 0, 1]]).astype(np.float64)
        np.testing.assert_allclose(inv, np.linalg.inv(full)[:2], rtol=1e-4, atol=1e-5)


def test_identity_start_reproduces_the_wrapped_model():
    jt.set_global_seed(0)
    model = create_model("unet", base_channels=4, depth=2)
    stn = wrap_with_stn(model)
    stn.eval()
    x = jt.array(np.random.default_rng(2).standard_normal((2, 3, 72, 88)).astype(np.float32))
    wrapped, direct = stn(x).numpy(), model(x).numpy()
    assert wrapped.shape == (2, 2, 72, 88)
    np.testing.assert_allclose(wrapped, direct, atol=1e-5)
    assert stn.stn_penalty().item() == pytest.approx(0.0, abs=1e-12)


def test_wrapper_follows_the_wrapped_model_at_72x88():
    jt.set_global_seed(0)
    model = create_model("unet", base_channels=4, depth=2)
    stn = wrap_with_stn(model, localisation_size=32)
    assert stn.get_encoder() is model.encoder
    assert (stn.size_divisor, stn.min_input_size) == (model.size_divisor, model.min_input_size)
    assert (stn.model_name, stn.model_args) == ("unet", model.model_args)
    assert list(stn(jt.randn(2, 3, 72, 88)).shape) == [2, 2, 72, 88]


def test_penalty_is_the_squared_distance_from_the_identity():
    stn = STNSegmenter(PassThrough(), in_channels=3, localisation_size=32)
    assert stn.stn_penalty().item() == 0.0
    set_theta(stn, [[0.8, 0, 0.1], [0, 0.8, -0.2]])
    stn(jt.array(np.repeat(smooth_image(), 2, axis=0)))
    assert stn.stn_penalty().item() == pytest.approx(0.2 ** 2 + 0.1 ** 2 + 0.2 ** 2 + 0.2 ** 2, rel=1e-5)


def test_deep_supervision_outputs_are_each_resampled():
    stn = STNSegmenter(TwoOutputs(), in_channels=3, localisation_size=32)
    set_theta(stn, [[1, 0, 0.5], [0, 1, 0]])
    x = smooth_image()
    main, aux = (o.numpy() for o in stn(jt.array(x)))
    np.testing.assert_allclose(main[..., 22:], x[..., 22:], atol=1e-4)
    np.testing.assert_allclose(aux[..., 22:], 2 * x[..., 22:], atol=1e-4)


def test_gradients_reach_the_localisation_network():
    jt.set_global_seed(0)
    model = create_model("unet", base_channels=4, depth=2)
    stn = wrap_with_stn(model, localisation_size=32)
    rng = np.random.default_rng(3)
    x = jt.array(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    target = jt.array(rng.standard_normal((2, 2, 64, 64)).astype(np.float32))
    head, first_conv = stn.localisation.theta.weight, stn.localisation.features[0].weight

    def grads():
        loss = ((stn(x) - target) ** 2).mean() + 0.1 * stn.stn_penalty()
        return loss, [g.numpy() for g in jt.grad(loss, [head, first_conv])]

    loss, (g_head, g_conv) = grads()
    assert np.abs(g_head).max() > 0
    # The last layer starts at zero weights, so nothing flows further back before the first update.
    assert np.abs(g_conv).max() == 0
    optimizer = jt.optim.SGD(stn.parameters(), lr=0.1)
    optimizer.step(loss)
    _, (_, g_conv) = grads()
    assert np.abs(g_conv).max() > 0


def test_transforms_within_the_tolerance_are_applied_as_the_identity():
    # Corner displacement of this θ: |0.001 * ±1| + |0.0005| in x, |0.0008| in y: at most 0.0017.
    near = [[1.001, 0.0, 0.0005], [0.0, 1.0, 0.0008]]
    x = np.random.default_rng(4).standard_normal((2, 3, 72, 88)).astype(np.float32)
    snapped = STNSegmenter(PassThrough(), in_channels=3, localisation_size=32, identity_tolerance=0.002)
    set_theta(snapped, near)
    # The identity grid reproduces the input up to the rounding of its sampling coordinates.
    np.testing.assert_allclose(snapped(jt.array(x)).numpy(), x, atol=1e-4)
    np.testing.assert_allclose(snapped.model.seen.numpy(), x, atol=1e-4)
    assert snapped.stn_penalty().item() == pytest.approx(0.001 ** 2 + 0.0005 ** 2 + 0.0008 ** 2, rel=1e-4)
    # Without the tolerance the same θ resamples twice at a sub-pixel offset: not the input.
    plain = STNSegmenter(PassThrough(), in_channels=3, localisation_size=32)
    set_theta(plain, near)
    assert np.abs(plain(jt.array(x)).numpy() - x).max() > 1e-2


def test_transforms_beyond_the_tolerance_are_pulled_toward_the_identity_by_it():
    identity = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    # Translations of 0.3 and 0.004 (distance = the translation's length), and a scale by 1.1,
    # which moves the corners by 0.1 * sqrt(2).
    theta = identity + np.array([[[0, 0, 0.18], [0, 0, 0.24]], [[0, 0, 0.004], [0, 0, 0]],
                                 [[0.1, 0, 0], [0, 0.1, 0]]], np.float32)
    applied = snap_to_identity(jt.array(theta), 0.01).numpy()
    np.testing.assert_allclose(applied[0] - identity, (theta[0] - identity) * (1 - 0.01 / 0.3), atol=1e-6)
    np.testing.assert_array_equal(applied[1], identity)
    np.testing.assert_allclose(applied[2] - identity, (theta[2] - identity) * (1 - 0.01 / (0.1 * math.sqrt(2))),
                               atol=1e-6)


def test_gradients_pass_through_the_tolerance_to_the_predicted_transform():
    # Inside the tolerance the image is not resampled, yet the localisation net learns from the
    # gradient of the θ it predicted, so it can leave the dead zone when the loss pays for it.
    x = jt.array(smooth_image())
    snapped = STNSegmenter(PassThrough(), in_channels=3, localisation_size=32, identity_tolerance=0.01)
    plain = STNSegmenter(PassThrough(), in_channels=3, localisation_size=32)
    grads = []
    for stn in (snapped, plain):
        set_theta(stn, [[1, 0, 0], [0, 1, 0]])
        loss = (stn(x) * jt.array(np.linspace(-1, 1, 88, dtype=np.float32))).mean()
        grads.append(jt.grad(loss, stn.localisation.theta.bias).numpy())
    assert np.abs(grads[1]).max() > 0
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5)


def test_bad_arguments():
    from model_zoo import ModelZooError

    with pytest.raises(ModelZooError, match="localisation_size 4"):
        STNSegmenter(PassThrough(), in_channels=3, localisation_size=4)
    with pytest.raises(ModelZooError, match="in_channels"):
        wrap_with_stn(PassThrough())
    with pytest.raises(ModelZooError, match="identity_tolerance must be a number >= 0, got -0.1"):
        STNSegmenter(PassThrough(), in_channels=3, identity_tolerance=-0.1)


def test_training_adds_the_weighted_penalty_and_logs_the_drift(tmp_path):
    theta = [[1.2, 0.0, 0.1], [0.0, 0.9, 0.0]]
    distance_sq = 0.2 ** 2 + 0.1 ** 2 + 0.1 ** 2
    first = {}
    for weight in (0.0, 10.0):
        cfg = load_config(overrides=[
            "model.stn=true", "model.args={base_channels: 4, depth: 2}", "data.patch_size=64",
            "train.batch_size=2", "train.iterations=1", "train.log_interval=1", "train.val_interval=100",
            f"train.stn_penalty={weight}"])
        trainer = Trainer(cfg, tmp_path / f"w{weight:g}", progress=False)
        set_theta(trainer.model, theta)
        trainer.train()
        first[weight] = trainer.log_rows[0]
        assert first[weight]["stn_theta_dist"] == pytest.approx(math.sqrt(distance_sq), rel=1e-5)
    # Same seed, weights and batch: the losses differ by exactly the penalty term.
    assert first[10.0]["loss"] - first[0.0]["loss"] == pytest.approx(10.0 * distance_sq, rel=1e-4)


def test_training_applies_the_configured_tolerance_and_checkpoints_rebuild_it(tmp_path):
    from jmedseg.checkpoint import load_checkpoint

    cfg = load_config(overrides=[
        "model.stn=true", "model.stn_tolerance=0.05", "model.args={base_channels: 4, depth: 2}",
        "data.patch_size=64", "train.batch_size=2", "train.iterations=1", "train.val_interval=100"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.model.identity_tolerance == 0.05
    trainer.train()
    model, meta = load_checkpoint(tmp_path / "run" / "last.npz")
    assert meta["model"]["stn_tolerance"] == 0.05 and model.identity_tolerance == 0.05
