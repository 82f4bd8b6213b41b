"""Schedules, sliding-window inference and checkpoints."""
import numpy as np
import pytest

from jmedseg.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from jmedseg.engine import LRSchedule, build_optimizer, labels_from_probs, predict_probs, set_lr
from jmedseg.engine.inference import gaussian_window
from jmedseg.engine.ema import ModelEMA
from jmedseg.errors import CheckpointError, ConfigError
from model_zoo import create_model
from model_zoo.backend import jt


def tiny_unet(**kw):
    jt.set_global_seed(0)
    return create_model("unet", base_channels=4, depth=2, **kw)


# -- schedules ---------------------------------------------------------------------------------
def test_poly_schedule_starts_at_lr_and_ends_at_min():
    s = LRSchedule("poly", 1e-2, total_steps=101, poly_power=1.0)
    assert s.lr_at(0) == pytest.approx(1e-2)
    assert s.lr_at(50) == pytest.approx(5e-3)
    assert s.lr_at(100) == pytest.approx(0.0)


def test_cosine_schedule_is_right_from_step_zero():
    # Jittor's CosineAnnealingLR runs one epoch late; ours gives lr at step 0 and the midpoint exactly.
    s = LRSchedule("cosine", 1.0, total_steps=11, min_lr=0.1)
    assert s.lr_at(0) == pytest.approx(1.0)
    assert s.lr_at(5) == pytest.approx(0.55)
    assert s.lr_at(10) == pytest.approx(0.1)


def test_warmup_then_step_schedule():
    s = LRSchedule("step", 1.0, total_steps=100, warmup_iters=10, step_size=20, step_gamma=0.5)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(5) == pytest.approx(0.55)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(29) == pytest.approx(1.0)
    assert s.lr_at(30) == pytest.approx(0.5)
    assert s.lr_at(70) == pytest.approx(0.125)


def test_set_lr_changes_the_update_size():
    p = jt.array(np.ones(3, np.float32))
    opt = build_optimizer("sgd", [p], lr=1.0, momentum=0.0)
    set_lr(opt, 0.25)
    opt.step((p * 2).sum())
    np.testing.assert_allclose(p.numpy(), 1 - 0.25 * 2)


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="train.optimizer"):
        build_optimizer("lamb", [], lr=1.0)


# -- inference ---------------------------------------------------------------------------------
def test_gaussian_window_peaks_in_the_centre():
    w = gaussian_window(33)
    assert w.shape == (33, 33) and w[16, 16] == pytest.approx(1.0)
    assert w[0, 0] < w[8, 8] < w[16, 16] and w.min() > 0


def test_probabilities_sum_to_one_and_match_input_size():
    model = tiny_unet()
    image = np.random.RandomState(0).randn(45, 70, 3).astype(np.float32)
    probs = predict_probs(model, image)
    assert probs.shape == (2, 45, 70)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_sliding_window_agrees_with_whole_image_for_a_pointwise_model():
    # A 1x1-conv model has no spatial context, so tiles blended with any weights must reproduce the
    # whole-image prediction exactly: this checks tile placement, padding and normalisation.
    model = create_model("unet", base_channels=4, depth=1)
    for m in model.modules():
        if isinstance(m, jt.nn.Conv2d) and m.kernel_size[0] == 3:
            w = np.zeros(m.weight.shape, np.float32)
            k = min(w.shape[0], w.shape[1])
            w[np.arange(k), np.arange(k), 1, 1] = 1.0
            m.weight.assign(jt.array(w))
    model.eval()
    image = np.random.RandomState(1).randn(50, 77, 3).astype(np.float32)
    whole = predict_probs(model, image)
    tiled = predict_probs(model, image, tile_size=32, overlap=0.5)
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def test_tiles_larger_than_image_and_tta():
    model = tiny_unet()
    image = np.random.RandomState(2).randn(36, 40, 3).astype(np.float32)
    probs = predict_probs(model, image, tile_size=64, tta=True)
    assert probs.shape == (2, 36, 40)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_labels_from_probs_threshold_and_argmax():
    binary = np.stack([1 - np.array([[0.2, 0.5]]), np.array([[0.2, 0.5]])])
    np.testing.assert_array_equal(labels_from_probs(binary, 0.5), [[0, 1]])
    multi = np.array([[[0.1]], [[0.3]], [[0.6]]])
    np.testing.assert_array_equal(labels_from_probs(multi), [[2]])


# -- weight average ----------------------------------------------------------------------------
def _set_weights(model, fill):
    model.load_parameters({k: np.full(v.shape, fill, dtype="float32") for k, v in model.state_dict().items()})


def test_ema_follows_the_ramped_decay_rule_and_restores_the_model():
    model = tiny_unet()
    _set_weights(model, 0.0)
    ema = ModelEMA(model, decay=0.2)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 4.0]):
        _set_weights(model, value)
        ema.update(model)
        d = min(0.2, (1 + n) / (10 + n))  # 0.1, 0.1818…, then capped at 0.2 (ramp 0.25)
        expected = d * expected + (1 - d) * value
    assert ema.updates == 3 and ema.decay_at(2) == 0.2
    for key, average in ema.state.items():
        np.testing.assert_allclose(average, expected, rtol=1e-6, err_msg=key)
    with ema.applied_to(model):
        assert all(np.allclose(v.numpy(), expected) for v in model.state_dict().values())
    assert all(np.all(v.numpy() == 4.0) for v in model.state_dict().values())


def test_ema_refuses_a_checkpoint_without_an_average():
    ema = ModelEMA(tiny_unet(), decay=0.9)
    with pytest.raises(CheckpointError, match="run.npz: holds no weight average"):
        ema.load_arrays({"model/x": np.zeros(1)}, 3, source="run.npz")
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(tiny_unet(), decay=1.0)


# -- checkpoints -------------------------------------------------------------------------------
def _saved(tmp_path, **meta_extra):
    model = tiny_unet()
    path = tmp_path / "m.npz"
    save_checkpoint(path, model, {"model": {"name": "unet", "args": model.model_args}, **meta_extra})
    return model, path


def test_checkpoint_keeps_metadata_and_no_temp_files(tmp_path):
    _, path = _saved(tmp_path, step=7)
    meta, arrays = read_checkpoint(path)
    assert meta["step"] == 7 and meta["model"]["args"]["base_channels"] == 4
    assert all(k.startswith("model/") for k in arrays)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_pickled_file_is_refused_without_running(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([Exploit()], dtype=object), __meta__=np.frombuffer(b"{}", np.uint8))
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(path)
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="refusing to load pickled objects"):
        read_checkpoint(raw)
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.npz")


def test_strict_loading_lists_missing_and_misshaped(tmp_path):
    model, path = _saved(tmp_path)
    meta, arrays = read_checkpoint(path)
    key = sorted(arrays)[0]
    del arrays[key]
    other = sorted(arrays)[-1]
    arrays[other] = np.zeros((3, 3, 3), np.float32)
    arrays["model/extra.weight"] = np.zeros(1, np.float32)
    import json
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.npz")
    msg = str(err.value)
    assert "missing: " + key[len("model/"):] in msg
    assert "unexpected: extra.weight" in msg
    assert "mis-shaped: " + other[len("model/"):] in msg


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    _, path = _saved(tmp_path)
    meta, arrays = read_checkpoint(path)
    import json
    meta["model"]["args"]["base_channels"] = 8
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_checkpoint(tmp_path / "tampered.npz")


def test_tampered_metadata(tmp_path):
    _, path = _saved(tmp_path)
    _, arrays = read_checkpoint(path)
    arrays["__meta__"] = np.frombuffer(b"{not json", np.uint8)
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "t.npz")
    arrays["__meta__"] = np.frombuffer(b'{"model": {"name": "nonet", "args": {}}, "format_version": 1}', np.uint8)
    np.savez(tmp_path / "u.npz", **arrays)
    with pytest.raises(CheckpointError, match="unknown model 'nonet'"):
        load_checkpoint(tmp_path / "u.npz")
