"""The benchmark runner: profiles, resuming, failed models recorded, tables and figures."""
import csv
import json
import os
import subprocess
import sys

import cv2
import pytest

import model_zoo.registry as registry
from conftest import REPO_ROOT
from jmedseg.benchmark import (PlannedModel, _fingerprint, git_commit, load_profile, list_profiles, model_config,
                               plan_benchmark, resolve_data_root, run_benchmark, run_worker, select_models)
from jmedseg.errors import ConfigError, DataError
from model_zoo import count_parameters, create_model, list_models, tiny_args

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Throwaway models: one raises in forward, one turns every logit into NaN, one predicts the same
# logits at every pixel (a 1x1 conv of an all-zero input: only its bias reaches the output).
PLUGIN = '''
from model_zoo import register_model
from model_zoo.backend import jt
from model_zoo.base import SegmentationModel


class _OneConv(SegmentationModel):
    def __init__(self, in_channels, num_classes, mode):
        super().__init__()
        self.conv = jt.nn.Conv2d(in_channels, num_classes, 1)
        self.mode = mode

    def forward_logits(self, x):
        if self.mode == "broken":
            raise RuntimeError("deliberately broken forward")
        if self.mode == "nan":
            return self.conv(x) * float("nan")
        return self.conv(x * 0.0)


@register_model
def bench_broken(in_channels=3, num_classes=2):
    return _OneConv(in_channels, num_classes, "broken")


@register_model
def bench_nan(in_channels=3, num_classes=2):
    return _OneConv(in_channels, num_classes, "nan")


@register_model
def bench_constant(in_channels=3, num_classes=2):
    return _OneConv(in_channels, num_classes, "constant")
'''

PROFILE = """\
description: two tiny models and a broken one, a few steps each
imports: [{plugin}]
models: [unet, unetpp, bench_broken]
args: tiny
iterations: {iterations}
overrides:
  data: {{patch_size: 64, val_fraction: 0}}
  train: {{batch_size: 4, lr: 2.0e-3, log_interval: 10}}
timing_runs: 2
flops_size: 128
grid_images: 2
"""


def write_profile(folder, iterations=40, plugin=None):
    """``folder/tiny.yaml``; it imports ``plugin`` (relative to the folder), else a fresh copy of PLUGIN."""
    folder.mkdir(parents=True, exist_ok=True)
    if plugin is None:
        (folder / "bench_models.py").write_text(PLUGIN)
        plugin = "bench_models.py"
    path = folder / "tiny.yaml"
    path.write_text(PROFILE.format(iterations=iterations, plugin=plugin))
    return path


@pytest.fixture
def own_registry(monkeypatch):
    """Models registered during a test disappear after it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_TINY_ARGS", dict(registry._TINY_ARGS))


# -- profiles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("iteration: 5\n", r"unknown key 'iteration' \(did you mean 'iterations'\?\)"),
    ("args: wide\n", r"'args' must be one of 'tiny', 'default', got 'wide'"),
    ("models: [unte]\n", r"models: unknown model 'unte' \(did you mean 'unet'"),
    ("models: ['nothing*']\n", r"pattern 'nothing\*' matches no registered model"),
    ("models: [unet]\nmodel_args: {unet: {base_chanels: 8}}\n",
     r"model_args.unet: unknown argument 'base_chanels' \(did you mean 'base_channels'\?"),
    ("models: [unet]\nmodel_args: {unetpp: {base_channels: 8}}\n", r"'unetpp' is not among the profile's models"),
    ("models: [unet]\noverrides: {model: {name: unetpp}}\n", r"'model.name' is set per model by the benchmark"),
    ("models: [unet]\noverrides: {train: {lrr: 1}}\n", r"model 'unet': .*unknown key 'train.lrr'"),
    ("models: [unet]\niterations: 0\n", r"'iterations' must be an integer >= 1 or null, got 0"),
    ("config: nowhere.yaml\n", r"'config': file 'nowhere.yaml' not found"),
    ("imports: [missing.py]\n", r"imports: file 'missing.py' not found"),
])
def test_profile_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_profile(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_unknown_profile_name_suggests_a_shipped_one():
    with pytest.raises(ConfigError, match=r"benchmark profile 'smok' not found.*did you mean 'smoke'"):
        load_profile("smok")


def test_shipped_profiles():
    assert {"smoke", "drive", "kvasir"} <= set(list_profiles())
    smoke = load_profile("smoke")
    assert smoke.args == "tiny" and smoke.dataset is None
    cfg = model_config(smoke, "unetpp")
    assert cfg.model.name == "unetpp" and dict(cfg.model.args) == tiny_args("unetpp")
    assert cfg.train.iterations == smoke.iterations and cfg.data.root is None
    for name, dataset in (("drive", "DRIVE"), ("kvasir", "Kvasir-SEG")):
        profile = load_profile(name)
        assert profile.dataset == dataset and profile.args == "default"
        assert set(profile.models) <= set(list_models())
        for model in profile.models:  # the light widths the profile gives replace the paper defaults
            args = dict(model_config(profile, model).model.args)
            assert args == profile.model_args.get(model, {})


def _network_signature(name):
    model = create_model(name, **tiny_args(name))
    return type(model).__name__, sorted((key, tuple(value.shape)) for key, value in model.state_dict().items())


def test_smoke_runs_every_network_once():
    """A registered model the smoke profile leaves out must build the same network as a sibling
    from its own module that the profile runs (whose row and trainability check then stand for it)."""
    smoke = load_profile("smoke")
    for name in sorted(set(list_models()) - set(smoke.models)):
        module = registry.model_entrypoint(name).__module__
        siblings = [m for m in smoke.models if registry.model_entrypoint(m).__module__ == module]
        twins = [m for m in siblings if _network_signature(m) == _network_signature(name)]
        assert twins, f"{name} is excluded from the smoke profile but no benchmarked model builds its network"


def test_models_selection_and_data_root(tmp_path, monkeypatch):
    profile = load_profile("smoke")
    assert select_models(profile, ["unetpp", "unet", "unet"]) == ["unetpp", "unet"]
    with pytest.raises(ConfigError, match=r"--models: 'unett' is not a model of profile 'smoke' \(did you mean 'unet'"):
        select_models(profile, ["unett"])
    assert resolve_data_root(profile) is None
    drive = load_profile("drive")
    (tmp_path / "DRIVE").mkdir()
    monkeypatch.setenv("JMEDSEG_DATA", str(tmp_path))
    assert resolve_data_root(drive) == (tmp_path / "DRIVE").resolve()
    assert resolve_data_root(drive, tmp_path) == tmp_path.resolve()
    with pytest.raises(DataError, match="dataset folder not found"):
        resolve_data_root(drive, tmp_path / "absent")


# -- the worker, in this process -----------------------------------------------------------------
def worker_spec(profile, name, work_dir):
    return {"model": name, "config": model_config(profile, name).to_dict(), "work_dir": str(work_dir),
            "imports": list(profile.imports), "timing_runs": 1, "flops_size": 64, "grid_images": 1}


def test_nan_and_collapsed_models_get_their_status(tmp_path, own_registry):
    profile = load_profile(write_profile(tmp_path / "profile"))
    nan = run_worker(worker_spec(profile, "bench_nan", tmp_path / "nan"))
    assert nan["status"] == "nan" and nan["reason"].startswith("loss became nan at step")
    assert "metrics" not in nan

    constant = run_worker(worker_spec(profile, "bench_constant", tmp_path / "constant"))
    assert constant["status"] == "collapsed", constant
    assert constant["reason"] in ("predicts background everywhere on all 8 test images",
                                  "predicts foreground everywhere on all 8 test images")
    pooled = constant["metrics"]["pooled"]
    if "background" in constant["reason"]:
        assert pooled["dice"] == 0.0 and constant["foreground_fraction"] == [0.0] * 8
    else:
        assert pooled["recall"] == 1.0 and constant["foreground_fraction"] == [1.0] * 8
    # A 1x1 conv 3 -> 2 channels: 8 weights; 2 x 3 x 2 multiply-adds per pixel at 64 x 64.
    assert constant["params"] == 8
    assert constant["gflops"] == pytest.approx(2 * 6 * 64 * 64 / 1e9)
    assert constant["iterations"] == 40 and constant["infer_ms"] > 0


# -- end to end: two runs, the second resuming --------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JMEDSEG_CACHE", str(tmp_path_factory.getbasetemp() / "jmedseg-cache"))
        mp.setattr(registry, "_MODELS", dict(registry._MODELS))
        mp.setattr(registry, "_TINY_ARGS", dict(registry._TINY_ARGS))
        profile = load_profile(write_profile(root / "profile"))
        dirs = dict(work_dir=root / "work", out_dir=root / "results")
        first = run_benchmark(profile, models=["unet"], log=lambda line: None, **dirs)
        unet_json = dirs["work_dir"] / "tiny" / "unet.json"
        before = (unet_json.read_bytes(), unet_json.stat().st_mtime_ns,
                  (dirs["work_dir"] / "tiny" / "unet" / "worker.log").stat().st_mtime_ns)
        lines = []
        second = run_benchmark(profile, command="python tools/benchmark_all.py --profile tiny.yaml",
                               log=lines.append, **dirs)
        yield dict(root=root, profile=profile, first=first, second=second, before=before, lines=lines,
                   run_dir=dirs["work_dir"] / "tiny", results=dirs["out_dir"] / "tiny", **dirs)


def test_first_run_trains_only_the_selected_model(bench):
    first = bench["first"]
    assert first["ran"] == ["unet"] and first["skipped"] == []
    record = first["records"]["unet"]
    assert record["status"] == "ok" and record["reason"] is None
    assert record["iterations"] == 40 and record["args"] == tiny_args("unet")
    assert record["params"] == count_parameters(create_model("unet", **tiny_args("unet")))
    pooled, mean = record["metrics"]["pooled"], record["metrics"]["mean"]
    assert record["metrics"]["num_images"] == 8
    for name in ("dice", "iou", "precision", "recall", "specificity", "auc"):
        assert 0.0 <= pooled[name] <= 1.0 and 0.0 <= mean[name] <= 1.0
    assert mean["hd95"] >= 0 and mean["assd"] >= 0
    assert record["train_images_per_s"] > 0 and record["infer_ms"] > 0 and record["gflops"] > 0
    assert record["peak_rss_mib"] >= record["rss_ready_mib"] > 0
    assert record["host"]["commit"] and record["host"]["cores"] >= 1
    assert sorted(record["grid"]) == ["24", "25"]  # the first two synthetic test images (24 train, 8 test)


def test_second_run_resumes_without_redoing_the_finished_model(bench):
    second = bench["second"]
    assert second["skipped"] == ["unet"] and second["ran"] == ["unetpp", "bench_broken"]
    unet_json = bench["run_dir"] / "unet.json"
    data, mtime, log_mtime = bench["before"]
    assert unet_json.read_bytes() == data and unet_json.stat().st_mtime_ns == mtime
    assert (bench["run_dir"] / "unet" / "worker.log").stat().st_mtime_ns == log_mtime
    assert second["records"]["unetpp"]["status"] == "ok"
    assert any(line.startswith("[2/2] bench_broken: failed") for line in bench["lines"])


def test_a_failing_model_is_recorded_and_the_run_goes_on(bench):
    broken = json.loads((bench["run_dir"] / "bench_broken.json").read_text())
    assert broken["status"] == "failed"
    assert broken["reason"] == "RuntimeError: deliberately broken forward"
    assert "metrics" not in broken and broken["params"] == 8


def test_changed_settings_make_results_stale(bench):
    # Same profile name, other iteration budget: every result is for another config now.
    changed = write_profile(bench["root"] / "changed", iterations=30, plugin="../profile/bench_models.py")
    changed = load_profile(changed)
    plan = plan_benchmark(changed, None, bench["run_dir"])
    assert [(p.name, p.state, p.run) for p in plan] == [
        ("unet", "stale", True), ("unetpp", "stale", True), ("bench_broken", "stale", True)]
    plan = plan_benchmark(bench["profile"], None, bench["run_dir"], retry_failed=True)
    assert [(p.name, p.state, p.run) for p in plan] == [
        ("unet", "done", False), ("unetpp", "done", False), ("bench_broken", "failed", True)]
    assert all(isinstance(p, PlannedModel) for p in plan)


def test_a_result_from_before_a_new_config_key_stays_current_while_the_key_is_at_its_default(bench, tmp_path):
    # A record written before `train.ema_decay` existed: its config lacks the key.
    record = json.loads((bench["run_dir"] / "unet.json").read_text())
    del record["config"]["train"]["ema_decay"]
    record["fingerprint"] = _fingerprint(record["config"], bench["profile"])
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    (run_dir / "unet.json").write_text(json.dumps(record))
    states = lambda profile: {p.name: (p.state, p.run) for p in plan_benchmark(profile, None, run_dir)}
    assert states(bench["profile"])["unet"] == ("done", False)

    plugin = str(bench["root"] / "profile" / "bench_models.py")
    ema_on = write_profile(tmp_path / "ema", plugin=plugin)
    ema_on.write_text(ema_on.read_text().replace("log_interval: 10}", "log_interval: 10, ema_decay: 0.5}"))
    assert states(load_profile(ema_on))["unet"] == ("stale", True)
    other_timing = write_profile(tmp_path / "timing", plugin=plugin)
    other_timing.write_text(other_timing.read_text().replace("timing_runs: 2", "timing_runs: 3"))
    assert states(load_profile(other_timing))["unet"] == ("stale", True)


def test_results_table_is_sorted_by_dice_with_failures_last(bench):
    with open(bench["results"] / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows[2:]] == ["bench_broken"]
    dices = [float(r["pooled_dice"]) for r in rows[:2]]
    assert dices == sorted(dices, reverse=True) and {r["model"] for r in rows[:2]} == {"unet", "unetpp"}
    assert [r["rank"] for r in rows] == ["1", "2", ""]
    assert rows[2]["status"] == "failed" and rows[2]["pooled_dice"] == ""
    for row in rows[:2]:
        record = json.loads((bench["run_dir"] / f"{row['model']}.json").read_text())
        assert float(row["pooled_dice"]) == pytest.approx(record["metrics"]["pooled"]["dice"], rel=1e-5)
        assert float(row["mean_hd95"]) == pytest.approx(record["metrics"]["mean"]["hd95"], rel=1e-5)
        assert int(row["params"]) == record["params"]

    readme = (bench["results"] / "README.md").read_text()
    assert "python tools/benchmark_all.py --profile tiny.yaml" in readme
    assert f"`{bench['first']['records']['unet']['host']['commit']}`" in readme
    assert "deliberately broken forward" in readme and "iterations: 40" in readme
    quality = readme.split("## Quality")[1].split("## Cost")[0]
    assert quality.index(f"`{rows[0]['model']}`") < quality.index(f"`{rows[1]['model']}`")
    assert "bench_broken" not in quality


def test_figures_are_written_for_the_synthetic_data(bench):
    scatter = cv2.imread(str(bench["results"] / "dice_vs_gflops.png"))
    assert scatter.shape == (640, 1000, 3) and (scatter < 128).any()
    grid = cv2.imread(str(bench["results"] / "predictions.png"))
    # Panels: image, ground truth, unet, unetpp; 160-px tiles with 6-px gaps.
    assert grid.shape[1] == 6 + 4 * (160 + 6)
    assert not (bench["run_dir"] / "predictions.png").exists()


def test_command_line_dry_run_and_errors(bench):
    env = dict(os.environ, JMEDSEG_CACHE=str(bench["root"]))
    tool = [sys.executable, str(REPO_ROOT / "tools" / "benchmark_all.py")]
    proc = subprocess.run(tool + ["--profile", str(bench["root"] / "profile" / "tiny.yaml"), "--dry-run",
                                  "--work-dir", str(bench["work_dir"]), "--models", "bench_broken,unet"],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()[1:]
    assert lines[0].split()[:3] == ["bench_broken", "skip", "failed"]
    assert lines[1].split()[:3] == ["unet", "skip", "done"]
    proc = subprocess.run(tool + ["--profile", "smoke", "--models", "unett", "--dry-run"],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert message.startswith("error: --models: 'unett' is not a model of profile 'smoke' (did you mean 'unet'?")
    assert "\n" not in message


SLOW_PLUGIN = '''
import os
import signal
import sys
import time

from model_zoo import register_model
from model_zoo.backend import jt
from model_zoo.base import SegmentationModel

if sys.argv[0].endswith(os.path.join("jmedseg", "benchmark.py")):  # in the worker process only
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Slow(SegmentationModel):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = jt.nn.Conv2d(in_channels, num_classes, 1)

    def forward_logits(self, x):
        time.sleep(60)
        return self.conv(x)


@register_model
def bench_slow(in_channels=3, num_classes=2):
    return _Slow(in_channels, num_classes)
'''


def test_a_worker_past_its_time_limit_is_killed_and_the_run_goes_on(tmp_path, own_registry, monkeypatch):
    # The worker ignores SIGTERM, so it ends with SIGKILL; Jittor's own SIGCHLD handler would end
    # this process too when a child dies of a signal, unless the benchmark takes that signal back.
    import jmedseg.benchmark as benchmark

    monkeypatch.setattr(benchmark, "_KILL_GRACE_S", 0.5)
    (tmp_path / "slow_model.py").write_text(SLOW_PLUGIN)
    (tmp_path / "slow.yaml").write_text("imports: [slow_model.py]\nmodels: [bench_slow]\niterations: 5\n"
                                        "overrides: {data: {val_fraction: 0}}\ntimeout_min: 0.1\n")
    outcome = run_benchmark(load_profile(tmp_path / "slow.yaml"), work_dir=tmp_path / "work",
                            out_dir=tmp_path / "results", log=lambda line: None)
    record = outcome["records"]["bench_slow"]
    assert record["status"] == "timeout" and record["wall_s"] < 30
    assert record["reason"] == "no result after 0.1 min (timeout_min); the worker was killed"
    assert "| `bench_slow` | timeout |" in (tmp_path / "results" / "slow" / "README.md").read_text()


def test_commit_label_ignores_only_the_results_folder(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "table.csv").write_text("dice\n0.5\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and git_commit(tmp_path, ignore=[tmp_path / "results"]) == clean
    (tmp_path / "results" / "table.csv").write_text("dice\n0.7\n")
    assert git_commit(tmp_path) == clean + "-dirty"
    assert git_commit(tmp_path, ignore=[tmp_path / "results"]) == clean
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_commit(tmp_path, ignore=[tmp_path / "results"]) == clean + "-dirty"
