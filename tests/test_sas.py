"""SAS end to end: `tools/train.py --sas` pretrains MoCo once (cached, resumable), loads the encoder,
trains with the SAS augmentation and the STN, and the checkpoint rebuilds the wrapped model; MoCo
and the STN work around every registered network."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, materialise, zero_gradient_names
from jmedseg.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from jmedseg.config import load_config
from jmedseg.engine import Trainer, build_optimizer
from jmedseg.ssl import MoCo
from model_zoo import create_model, list_models, tiny_args
from model_zoo.backend import jt
from model_zoo.stn import wrap_with_stn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SMALL = ["--set", "model.args.base_channels=8", "model.args.depth=3", "train.iterations=20",
         "train.val_interval=20", "train.batch_size=4", "data.patch_size=64", "eval.distances=false"]


def train_tool():
    spec = importlib.util.spec_from_file_location("train_tool", REPO_ROOT / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(cache, work_dir, *args):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "train.py"), "--model", "unet", "--no-progress",
                           "--work-dir", str(work_dir), *args, *SMALL], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=dict(os.environ, JMEDSEG_CACHE=str(cache)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def sas_run(tmp_path_factory):
    cache, work = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("sas")
    return cache, work, train(cache, work, "--sas")


def test_sas_pretrains_loads_the_encoder_and_trains_with_stn_and_augmentation(sas_run):
    cache, work, proc = sas_run
    folders = list((cache / "ssl").iterdir())
    assert len(folders) == 1 and (folders[0] / "encoder.npz").is_file()
    encoder_file = folders[0] / "encoder.npz"
    assert "SSL encoder: MoCo pretraining unet first" in proc.stdout
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    preset = yaml.safe_load((REPO_ROOT / "configs" / "augment" / "sas.yaml").read_text())["data"]["augment"]
    assert cfg["model"]["stn"] is True and cfg["train"]["stn_penalty"] == train_tool().STN_PENALTY
    assert cfg["model"]["stn_tolerance"] == train_tool().STN_TOLERANCE
    drift = [float(row.split(",")[-1]) for row in (work / "log.csv").read_text().splitlines()[1:]]
    assert (work / "log.csv").read_text().splitlines()[0].endswith(",stn_theta_dist") and drift
    assert all(0.0 <= d < 1.0 for d in drift)
    assert [op["name"] for op in cfg["data"]["augment"]] == [op["name"] for op in preset]
    assert cfg["model"]["ssl"] == str(encoder_file)

    model, meta = load_checkpoint(work / "last.npz")
    assert meta["model"]["stn"] is True and type(model).__name__ == "STNSegmenter"
    loaded = [line for line in proc.stdout.splitlines() if line.startswith("loaded ")]
    assert loaded == [f"loaded {len(model.model.get_encoder().state_dict())} encoder tensors from {encoder_file}"]

    # Before any step the trainer's encoder holds exactly the pretrained weights.
    trainer = Trainer(load_config(work / "config.yaml"), work / "fresh", progress=False)
    _, arrays = read_checkpoint(encoder_file)
    state = trainer.model.model.get_encoder().state_dict()
    for name, var in state.items():
        np.testing.assert_array_equal(var.numpy(), arrays[f"model/{name}"], err_msg=name)


def test_second_sas_run_reuses_the_cached_encoder(sas_run, tmp_path):
    cache, _, _ = sas_run
    proc = train(cache, tmp_path / "again", "--sas")
    assert "SSL encoder (cached):" in proc.stdout and "MoCo pretraining" not in proc.stdout


def test_interrupted_cached_pretraining_is_resumed(sas_run, tmp_path):
    cache, _, _ = sas_run
    folder = next((cache / "ssl").iterdir())
    before = read_checkpoint(folder / "encoder.npz")[1]
    (folder / "encoder.npz").unlink()  # as if killed after its last checkpoint
    proc = train(cache, tmp_path / "resumed", "--sas")
    assert f"SSL encoder: resuming the interrupted MoCo pretraining in {folder}" in proc.stdout
    after = read_checkpoint(folder / "encoder.npz")[1]
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def run_test_tool(checkpoint, *args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "test.py"), str(checkpoint), "--no-progress",
                           *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT)


def score(checkpoint, out, *args):
    """``tools/test.py``'s pooled metrics for ``checkpoint``."""
    proc = run_test_tool(checkpoint, "--out", out, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())["pooled"]


def test_test_tool_without_stn_scores_the_segmenter_on_the_unwarped_image(sas_run, tmp_path):
    _, work, _ = sas_run
    model, meta = load_checkpoint(work / "last.npz")
    head = model.localisation.theta  # predict a shift by a quarter of the image for every input
    head.weight = jt.zeros(head.weight.shape, dtype="float32")
    head.bias = jt.array(np.array([1, 0, 0.5, 0, 1, 0], np.float32))
    save_checkpoint(tmp_path / "shifted.npz", model, meta)

    without = score(work / "last.npz", tmp_path / "a.json", "--without-stn")
    assert score(tmp_path / "shifted.npz", tmp_path / "b.json", "--without-stn") == without
    assert score(tmp_path / "shifted.npz", tmp_path / "c.json")["auc"] != without["auc"]

    plain = tmp_path / "plain.npz"
    save_checkpoint(plain, model.model, dict(meta, model=dict(meta["model"], stn=False)))
    proc = run_test_tool(plain, "--without-stn")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {plain}: --without-stn: this checkpoint's model has no STN" in proc.stderr


def test_stn_flags_set_the_penalty_and_tolerance_unless_set_gives_them():
    tool = train_tool()
    for flags in ({"stn": True}, {"sas": True}):
        cfg = load_config(overrides=tool.flag_overrides(["train.lr=0.01"], **flags))
        assert cfg.train.stn_penalty == tool.STN_PENALTY and cfg.model.stn_tolerance == tool.STN_TOLERANCE
        assert cfg.model.stn and cfg.train.lr == 0.01
        cfg = load_config(overrides=tool.flag_overrides(
            ["train.stn_penalty=0", "model.stn_tolerance=0", "model.stn=false"], **flags))
        # --set gives the weight and the tolerance; the flag turns the STN on
        assert cfg.train.stn_penalty == 0.0 and cfg.model.stn_tolerance == 0.0 and cfg.model.stn
    for cfg in (load_config(overrides=tool.flag_overrides([], aug="sas")),
                load_config(overrides=tool.flag_overrides([], ssl="encoder.npz"))):
        assert (cfg.train.stn_penalty, cfg.model.stn_tolerance) == (0.0, 0.0)


# -- every registered network ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_moco_step_and_stn_wrapper_work_for_every_network(name):
    jt.set_global_seed(0)
    model = materialise(create_model(name, **tiny_args(name)))
    moco = MoCo(model, dim=8, hidden_dim=16, queue_size=8)
    optimizer = build_optimizer("sgd", moco.query_parameters(), 0.01, momentum=0.9)
    views = np.random.RandomState(0).standard_normal((2, 4, 3, 64, 64)).astype(np.float32)
    loss, top1 = moco.train_step(views[0], views[1], optimizer)
    assert np.isfinite(loss) and 0.0 <= top1 <= 1.0
    assert moco.queue.ptr == 4

    stn = materialise(wrap_with_stn(create_model(name, **tiny_args(name))))
    stn.train()
    out = stn(jt.array(views[0, :2]))
    assert all(list(o.shape) == [2, 2, 64, 64] for o in (out if isinstance(out, (list, tuple)) else [out]))
    # The registry's gradient probe, so the network's kernels are reused.
    zero = zero_gradient_names(stn, jt.array(views[0, :2]))
    localisation = [n for n, _ in stn.localisation.named_parameters()]
    assert any(f"localisation.{n}" not in zero for n in localisation), \
        "no gradient reaches the localisation network"
