"""MoCo v2: EMA key branch, FIFO queue, InfoNCE, augmentation, a short run on the synthetic data, checkpoints."""
import csv
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT, kill_after_checkpoint
from jmedseg.checkpoint import read_checkpoint, save_checkpoint
from jmedseg.data import generate_synthetic, synthetic_root
from jmedseg.engine import LRSchedule, build_optimizer, set_lr
from jmedseg.errors import CheckpointError, ConfigError, DataError
from jmedseg.ssl import (KeyQueue, MoCo, MoCoAugment, TwoViewSampler, find_images, info_nce_loss,
                         load_encoder_weights, load_images)
from model_zoo import create_model
from model_zoo.backend import jt


def tiny_moco(base_channels=4, **kw):
    jt.set_global_seed(0)
    model = create_model("unet", base_channels=base_channels, depth=2)
    return model, MoCo(model, dim=8, hidden_dim=16, queue_size=12, **kw)


def random_views(rng, n=4, size=32):
    return (rng.standard_normal((n, 3, size, size)).astype(np.float32),
            rng.standard_normal((n, 3, size, size)).astype(np.float32))


def trainable(branch):
    return {name: var for name, var in branch.state_dict().items() if not var.is_stop_grad()}


# -- key branch --------------------------------------------------------------------------------------
def test_key_branch_starts_as_a_copy_and_never_gets_gradients():
    _, moco = tiny_moco()
    query, key = moco.query.state_dict(), moco.key.state_dict()
    assert set(query) == set(key)
    for name in query:
        np.testing.assert_array_equal(key[name].numpy(), query[name].numpy())
        assert key[name].is_stop_grad()
    assert not {id(v) for v in key.values()} & {id(p) for p in moco.query_parameters()}

    x = jt.array(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    loss, _ = info_nce_loss(moco.query(x), moco.key(x), moco.queue.keys, 0.2)
    key_params = [key[name] for name in trainable(moco.query)]
    query_params = list(trainable(moco.query).values())
    grads = jt.grad(loss, key_params + query_params)
    assert all(np.abs(g.numpy()).max() == 0 for g in grads[:len(key_params)])
    assert any(np.abs(g.numpy()).max() > 0 for g in grads[len(key_params):])


def test_key_branch_follows_the_ema_rule_exactly():
    _, moco = tiny_moco(momentum=0.9)
    optimizer = build_optimizer("sgd", moco.query_parameters(), lr=0.5, momentum=0.0)
    rng = np.random.default_rng(1)
    moco.train_step(*random_views(rng), optimizer)  # key = query_0; the query moves on
    q0 = {n: v.numpy().copy() for n, v in trainable(moco.query).items()}
    k0 = {n: moco.key.state_dict()[n].numpy().copy() for n in q0}
    assert any(np.abs(q0[n] - k0[n]).max() > 1e-4 for n in q0)
    moco.train_step(*random_views(rng), optimizer)
    key = moco.key.state_dict()
    for name in q0:
        expected = 0.9 * k0[name].astype(np.float64) + 0.1 * q0[name].astype(np.float64)
        np.testing.assert_allclose(key[name].numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=name)
        assert key[name].is_stop_grad()


# -- queue and loss ------------------------------------------------------------------------------------
def test_queue_is_fifo_and_holds_unit_keys():
    queue = KeyQueue(size=5, dim=2, seed=0)
    np.testing.assert_allclose(np.linalg.norm(queue.keys, axis=1), 1, rtol=1e-6)
    queue.enqueue([[3, 4], [0, 2]])
    queue.enqueue([[-1, 0], [5, 0], [0, -3]])
    queue.enqueue([[1, 1]])  # wraps around: overwrites the oldest key, [0.6, 0.8]
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(queue.ordered(), [[0, 1], [-1, 0], [1, 0], [0, -1], [r, r]], atol=1e-6)
    assert queue.ptr == 1
    queue.enqueue(np.arange(14, dtype=np.float32).reshape(7, 2) + 1)  # more than K: the last 5 stay
    np.testing.assert_allclose(np.linalg.norm(queue.keys, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(queue.ordered()[-1], np.array([13, 14]) / math.hypot(13, 14), rtol=1e-6)
    np.testing.assert_allclose(queue.ordered()[0], np.array([5, 6]) / math.hypot(5, 6), rtol=1e-6)


def test_info_nce_by_hand():
    # q = k = e1 and negatives e2, e3 at tau 1: logits [1, 0, 0], loss log(e + 2) - 1.
    eye = np.eye(3, dtype=np.float32)
    loss, logits = info_nce_loss(jt.array(eye[:1]), jt.array(eye[:1]), eye[1:], 1.0)
    np.testing.assert_allclose(logits.numpy(), [[1, 0, 0]], atol=1e-6)
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-5)


def test_info_nce_matches_numpy():
    rng = np.random.default_rng(2)

    def unit(shape):
        v = rng.standard_normal(shape)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    q, k, negatives, tau = unit((3, 4)), unit((3, 4)), unit((5, 4)), 0.2
    loss, logits = info_nce_loss(jt.array(q), jt.array(k), negatives, tau)
    expected_logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ negatives.T], axis=1) / tau
    log_probs = expected_logits - np.log(np.exp(expected_logits).sum(1, keepdims=True))
    np.testing.assert_allclose(logits.numpy(), expected_logits, rtol=1e-5, atol=1e-5)
    assert loss.item() == pytest.approx(-log_probs[:, 0].mean(), rel=1e-5)


# -- data ------------------------------------------------------------------------------------------------
def test_augment_is_seeded_and_makes_different_views():
    image = np.random.default_rng(3).standard_normal((50, 70, 3)).astype(np.float32)
    augment = MoCoAugment(32)
    a = augment(image, np.random.default_rng(4))
    b = augment(image, np.random.default_rng(4))
    c = augment(image, np.random.default_rng(5))
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    gray = MoCoAugment(32)(image[:, :, :1], np.random.default_rng(6))
    assert gray.shape == (1, 32, 32)


def test_augment_without_randomness_is_a_resize():
    # scale 1 with ratio exactly the image's, no jitter/blur/flip: the view is the image resized.
    image = np.random.default_rng(7).standard_normal((64, 64, 3)).astype(np.float32)
    augment = MoCoAugment(32, scale=(1, 1), ratio=(1, 1), jitter_p=0, gray_p=0, blur_p=0, flip_p=0)
    expected = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    np.testing.assert_allclose(augment(image, np.random.default_rng(0)), expected, atol=1e-6)


def test_find_images_in_flat_and_split_folders(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("b.png", "a.jpg", ".hidden.png"):
        cv2.imwrite(str(flat / name), np.full((40, 40, 3), 90, np.uint8))
    (flat / "notes.txt").write_text("not an image")
    assert [p.name for p in find_images(flat)] == ["a.jpg", "b.png"]
    root = synthetic_root()
    files = find_images(root, "train")
    assert len(files) == 24 and files[0].parent == root / "train" / "images"
    with pytest.raises(DataError, match="no image files"):
        find_images(tmp_path)
    with pytest.raises(DataError, match="not found"):
        find_images(tmp_path / "missing")


def test_sampler_gives_two_different_views_of_each_image():
    images = [np.full((40, 40, 1), float(i), np.float32) for i in range(5)]
    plain = MoCoAugment(16, jitter_p=0, gray_p=0, blur_p=0)
    sampler = TwoViewSampler(images, batch_size=3, augment=plain, seed=0)
    seen = []
    for _ in range(5):  # 15 items = 3 epochs of 5 images
        queries, keys = next(sampler)
        assert queries.shape == keys.shape == (3, 1, 16, 16)
        np.testing.assert_array_equal(queries[:, 0, 0, 0], keys[:, 0, 0, 0])  # same image in both views
        seen += queries[:, 0, 0, 0].tolist()
    assert sorted(seen) == sorted(list(range(5)) * 3)


def test_region_instances_are_random_windows_seen_by_both_views():
    # A ramp image: a pixel's value is its column, so a view tells where its window lies.
    image = np.tile(np.arange(200, dtype=np.float32), (50, 1))[:, :, None]
    whole_window = MoCoAugment(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0, gray_p=0, blur_p=0, flip_p=0)
    sampler = TwoViewSampler([image], batch_size=6, augment=whole_window, seed=0, region=20)
    queries, keys = next(sampler)
    np.testing.assert_array_equal(queries, keys)  # both views are the one 20 x 20 window
    spans = queries.max(axis=(1, 2, 3)) - queries.min(axis=(1, 2, 3))
    assert queries.shape == (6, 1, 8, 8) and (spans < 20).all()
    assert len(set(queries.mean(axis=(1, 2, 3)).round(3))) == 6  # six different windows of one image
    state = sampler.state_dict()
    with pytest.raises(CheckpointError, match="instance region 20, but this run has 1 images in batches of 6 "
                                              "with instance region None"):
        TwoViewSampler([image], batch_size=6, augment=whole_window).load_state_dict(state)
    with pytest.raises(ConfigError, match="instance region must be a positive integer"):
        TwoViewSampler([image], batch_size=6, augment=whole_window, region=0)


# -- training and checkpoints --------------------------------------------------------------------------------
def retrieval(moco, views_a, views_b):
    """Instance discrimination on fixed view pairs: (fraction of a-views whose most similar b-view is
    their own image's, mean cosine similarity of all pairs)."""
    with jt.no_grad():
        a, b = moco.query(jt.array(views_a)).numpy(), moco.query(jt.array(views_b)).numpy()
    similarity = a @ b.T
    return float((similarity.argmax(axis=1) == np.arange(len(a))).mean()), float(similarity.mean())


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A tiny UNet encoder pretrained for 60 steps on 96 synthetic images, probed before and after.

    Crops and flips only: with MoCo v2's colour jitter these near-identical synthetic fundus images
    are not separable by a tiny network in a few hundred steps (retrieval stays near chance), so the
    short run would not show learning.
    """
    root = generate_synthetic(tmp_path_factory.mktemp("synthetic"), n_train=96, n_test=0, size=96)
    images = load_images(find_images(root, "train"))
    augment = MoCoAugment(64, scale=(0.5, 1.0), jitter_p=0, gray_p=0, blur_p=0)
    probe_rng = np.random.default_rng(123)
    views_a, views_b = (np.stack([augment(image, probe_rng) for image in images]) for _ in range(2))
    jt.set_global_seed(0)
    model = create_model("unet", base_channels=8, depth=3)
    moco = MoCo(model, dim=32, hidden_dim=64, queue_size=32, momentum=0.99, temperature=0.2, seed=0)
    optimizer = build_optimizer("sgd", moco.query_parameters(), lr=0.05, weight_decay=1e-4, momentum=0.9)
    sampler = TwoViewSampler(images, batch_size=16, augment=augment, seed=0)
    before = retrieval(moco, views_a, views_b)
    schedule, history = LRSchedule("cosine", 0.05, total_steps=60), []
    for step in range(60):
        set_lr(optimizer, schedule.lr_at(step))
        history.append(moco.train_step(*next(sampler), optimizer))
    return model, moco, np.array(history), before, retrieval(moco, views_a, views_b)


def test_short_run_learns_instance_discrimination(short_run):
    _, _, history, before, after = short_run
    assert np.isfinite(history).all()
    # The first 2 steps meet a queue of random vectors (easy negatives); compare from step 2 on.
    first, last = history[2:17].mean(axis=0), history[-15:].mean(axis=0)
    assert last[0] < first[0] - 0.3, (first, last)  # loss
    # Top-1 among [positive, queue] rises by more than twice the standard error of the difference
    # of two such means (15 steps of 16 queries each): a fixed margin was within the noise.
    queries = 15 * 16
    noise = np.sqrt((first[1] * (1 - first[1]) + last[1] * (1 - last[1])) / queries)
    assert last[1] > first[1] + 2 * noise, (first, last, noise)
    # On fixed view pairs of all 96 images: own-image retrieval rises and the embeddings spread out.
    assert after[0] > before[0] + 0.1, (before, after)
    assert after[1] < before[1] - 0.2, (before, after)


def test_encoder_weights_round_trip_strictly(short_run, tmp_path):
    model, moco = short_run[:2]
    path = tmp_path / "encoder.npz"
    moco.save_encoder(path, iterations=60)
    jt.set_global_seed(1)
    fresh = create_model("unet", base_channels=8, depth=3, num_classes=3)  # another head is fine
    assert load_encoder_weights(fresh, path) == len(model.encoder.state_dict())
    trained = model.encoder.state_dict()
    for name, var in fresh.encoder.state_dict().items():
        np.testing.assert_array_equal(var.numpy(), trained[name].numpy(), err_msg=name)

    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_encoder_weights(create_model("unet", base_channels=4, depth=3), path)
    with pytest.raises(CheckpointError, match="encoder of model 'unet'.*'attention_unet'"):
        load_encoder_weights(create_model("attention_unet", base_channels=8, depth=3), path)
    full = tmp_path / "full.npz"
    save_checkpoint(full, model, {"model": {"name": "unet", "args": model.model_args}})
    with pytest.raises(CheckpointError, match="not an encoder checkpoint"):
        load_encoder_weights(fresh, full)


# -- command line ---------------------------------------------------------------------------------------------
def run_moco(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "ssl_pretrain" / "moco.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=dict(os.environ))


def test_command_line_writes_a_loadable_encoder(tmp_path):
    proc = run_moco("--set", "model.args.base_channels=4", "model.args.depth=2", "--iterations", 3, "--batch", 4,
                    "--size", 32, "--queue", 8, "--dim", 8, "--hidden-dim", 16, "--log-interval", 2,
                    "--work-dir", tmp_path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss,top1,images_per_s,elapsed_s" and len(rows) == 3
    model = create_model("unet", base_channels=4, depth=2)
    assert load_encoder_weights(model, tmp_path / "encoder.npz") == len(model.encoder.state_dict())

    proc = run_moco("--set", "model.args.base_channels=4", "--size", 40, "--work-dir", tmp_path / "bad")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "error: --size 40: the encoder of unet needs a multiple of 16 of at least 32"


# -- interruption -------------------------------------------------------------------------------------------
TINY_RUN = ["--set", "model.args.base_channels=4", "model.args.depth=2", "--iterations", 300, "--batch", 4,
            "--size", 32, "--queue", 12, "--dim", 8, "--hidden-dim", 16, "--log-interval", 5,
            "--checkpoint-interval", 10, "--no-progress"]


def log_rows(run):
    with open(run / "log.csv") as f:
        return [(int(r["step"]), float(r["loss"]), float(r["top1"])) for r in csv.DictReader(f)]


def test_sigkill_then_resume_matches_uninterrupted_moco_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = run_moco(*TINY_RUN, "--work-dir", full)
    assert proc.returncode == 0, proc.stderr
    kill_after_checkpoint([sys.executable, REPO_ROOT / "ssl_pretrain" / "moco.py", *TINY_RUN, "--work-dir", killed],
                          killed / "last.npz", settle=0.2)  # mid-run, not right after a checkpoint
    killed_at = read_checkpoint(killed / "last.npz")[0]["step"]
    assert 0 < killed_at < 300, "the run finished before the kill; nothing was tested"
    assert not (killed / "encoder.npz").exists()

    proc = run_moco("--resume", killed, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {killed} at step {killed_at}" in proc.stdout
    expected, got = log_rows(full), log_rows(killed)
    assert [r[0] for r in got] == [r[0] for r in expected] == list(range(5, 301, 5))
    np.testing.assert_allclose(np.array(got)[:, 1:], np.array(expected)[:, 1:], rtol=1e-5, atol=1e-6)
    _, want = read_checkpoint(full / "encoder.npz")
    _, have = read_checkpoint(killed / "encoder.npz")
    assert want.keys() == have.keys()
    for name in want:
        np.testing.assert_allclose(have[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # The queue and the key encoder were restored too: the final states agree.
    _, want = read_checkpoint(full / "last.npz")
    _, have = read_checkpoint(killed / "last.npz")
    np.testing.assert_allclose(have["queue/keys"], want["queue/keys"], rtol=1e-5, atol=1e-6)
    key_names = [name for name in want if name.startswith("model/key.")]
    assert key_names
    for name in key_names:
        np.testing.assert_allclose(have[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_a_used_folder(tmp_path):
    run = tmp_path / "run"
    small = [a if a != 300 else 10 for a in TINY_RUN]
    assert run_moco(*small, "--work-dir", run).returncode == 0
    proc = run_moco("--resume", run, "--lr", "0.1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --lr: the run was started with 0.03; --resume continues with its saved settings"
    proc = run_moco(*small, "--work-dir", run)
    assert proc.returncode == 2 and "holds a MoCo run already; continue it with --resume" in proc.stderr
    proc = run_moco("--resume", tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(f"error: {tmp_path}: not a MoCo run folder")
    assert "Traceback" not in proc.stderr


def test_moco_state_refuses_another_configuration(tmp_path):
    _, moco = tiny_moco()
    optimizer = build_optimizer("sgd", moco.query_parameters(), 0.03, 0.0, momentum=0.9)
    moco.save_state(tmp_path / "last.npz", optimizer, step=1)
    _, other = tiny_moco(temperature=0.5)
    with pytest.raises(CheckpointError, match="written for"):
        other.load_state(tmp_path / "last.npz", build_optimizer("sgd", other.query_parameters(), 0.03, 0.0,
                                                                momentum=0.9))
    save_checkpoint(tmp_path / "encoder.npz", moco.encoder, {"model": {"name": "unet", "args": {}}})
    with pytest.raises(CheckpointError, match="not a MoCo training state"):
        moco.load_state(tmp_path / "encoder.npz", optimizer)
