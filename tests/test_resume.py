"""Interruption safety: SIGKILL mid-run + --resume equals an uninterrupted run; NaN losses."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, kill_after_checkpoint
from jmedseg.checkpoint import arrays_under, load_checkpoint, read_checkpoint
from jmedseg.config import load_config
from jmedseg.engine import Trainer, evaluate
from jmedseg.errors import CheckpointError

SETTINGS = ["model.args={base_channels: 4, depth: 2}", "train.iterations=240", "train.batch_size=4",
            "data.patch_size=48", "train.log_interval=10", "train.checkpoint_interval=20",
            "train.val_interval=60", "eval.distances=false", "train.seed=3"]


def train_cmd(*args):
    return [sys.executable, str(REPO_ROOT / "tools" / "train.py"), "--no-progress", *map(str, args)]


def losses(run):
    with open(run / "log.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    subprocess.run(train_cmd("--work-dir", run, "--overwrite", "--set", *SETTINGS), check=True,
                   capture_output=True, cwd=REPO_ROOT)
    return run


def test_sigkill_then_resume_matches_uninterrupted_run(uninterrupted, tmp_path):
    run = tmp_path / "killed"
    kill_after_checkpoint(train_cmd("--work-dir", run, "--set", *SETTINGS), run / "last.npz")
    killed_at = read_checkpoint(run / "last.npz")[0]["step"]
    assert killed_at < 240, "the run finished before the kill; nothing was tested"

    resumed = subprocess.run(train_cmd("--resume", run), capture_output=True, text=True, cwd=REPO_ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} at step {killed_at}" in resumed.stdout
    expected, got = losses(uninterrupted), losses(run)
    assert [s for s, _ in got] == [s for s, _ in expected]
    np.testing.assert_allclose([l for _, l in got], [l for _, l in expected], rtol=1e-5)
    full = json.loads((uninterrupted / "test_report.json").read_text())["pooled"]
    again = json.loads((run / "test_report.json").read_text())["pooled"]
    assert again["dice"] == pytest.approx(full["dice"], abs=1e-6)


def test_resume_refuses_weights_only_checkpoint(uninterrupted, tmp_path):
    proc = subprocess.run(train_cmd("--resume", uninterrupted / "best.npz"), capture_output=True, text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert "holds weights only" in proc.stderr and "Traceback" not in proc.stderr


def _trainer(tmp_path, *extra):
    cfg = load_config(None, SETTINGS + ["train.iterations=40", *extra])
    return Trainer(cfg, tmp_path, progress=False)


def _inject_nan(trainer, at_call):
    from model_zoo.backend import jt

    real, calls = trainer.loss_fn, {"n": 0}

    def loss_fn(logits, target):
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] == at_call else loss

    trainer.loss_fn = loss_fn
    return jt


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    _inject_nan(trainer, at_call=25)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 25 .*last\.npz"):
        trainer.train()
    meta, _ = read_checkpoint(tmp_path / "last.npz")
    assert meta["step"] == 20


def test_nan_loss_retries_from_last_checkpoint_with_lower_lr(tmp_path):
    trainer = _trainer(tmp_path, "train.nan_retries=1", "train.nan_lr_factor=0.5", "train.scheduler=constant")
    _inject_nan(trainer, at_call=25)
    trainer.train()
    assert trainer.step == 40 and trainer.lr_scale == 0.5 and trainer.nan_retries_used == 1
    rows = {r["step"]: r for r in trainer.log_rows}
    assert rows[20]["lr"] == pytest.approx(1e-3) and rows[40]["lr"] == pytest.approx(5e-4)
    assert all(np.isfinite(r["loss"]) for r in trainer.log_rows)


def test_ema_is_validated_kept_and_resumed_exactly(tmp_path):
    ema = ["train.ema_decay=0.9"]
    full = _trainer(tmp_path / "full", *ema)
    full.train()  # validates once, at step 40, and keeps that model in best.npz
    kept = arrays_under(read_checkpoint(tmp_path / "full" / "best.npz")[1], "model/")
    trained = {k: v.numpy() for k, v in full.model.state_dict().items()}
    assert set(kept) == set(full.ema.state) and full.ema.updates == 40
    assert all(np.array_equal(kept[k], full.ema.state[k]) for k in kept)
    assert any(not np.allclose(kept[k], trained[k]) for k in kept), "best.npz holds the trained weights"
    model, _ = load_checkpoint(tmp_path / "full" / "best.npz")
    again = evaluate(model, full.datasets["val"], full.num_classes, distances=False)
    assert full.val_rows[-1]["dice"] == pytest.approx(again["pooled"]["dice"], abs=1e-6)

    half = _trainer(tmp_path / "half", *ema)
    half.total_steps = 20  # stop at the checkpoint of step 20; the schedule still spans 40 steps
    half.train()
    resumed = _trainer(tmp_path / "half", *ema)
    assert resumed.resume() == 20 and resumed.ema.updates == 20
    resumed.train()
    for key, average in full.ema.state.items():
        np.testing.assert_allclose(resumed.ema.state[key], average, rtol=1e-5, atol=1e-7, err_msg=key)
    (tmp_path / "plain").mkdir()
    _trainer(tmp_path / "plain", "data.val_fraction=0").save_last()
    with pytest.raises(CheckpointError, match="holds no weight average"):
        _trainer(tmp_path / "plain", *ema).resume()
