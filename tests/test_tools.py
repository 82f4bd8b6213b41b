"""End to end through the command-line tools: train on the synthetic data, test, predict, errors."""
import json
import os
import re
import resource
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run(tool, *args, check=True):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """UNet (base 8) trained for 300 steps on the embedded synthetic dataset."""
    work = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    os.environ["JMEDSEG_CACHE"] = str(cache)
    proc = run("train.py", "--model", "unet", "--work-dir", work, "--overwrite", "--no-progress",
               "--set", "model.args.base_channels=8", "train.iterations=300", "train.val_interval=100",
               "data.patch_size=64", "train.batch_size=8", "train.lr=2e-3")
    return work, proc, cache


def test_training_beats_trivial_predictors(trained_run):
    from jmedseg.data import build_datasets
    from jmedseg.metrics import dice

    work, proc, cache = trained_run
    os.environ["JMEDSEG_CACHE"] = str(cache)
    for name in ("config.yaml", "log.csv", "val.csv", "history.json", "best.npz", "last.npz", "test_report.json"):
        assert (work / name).exists(), name
    report = json.loads((work / "test_report.json").read_text())
    test = build_datasets(None)["test"]
    gt = np.concatenate([s.mask[s.fov].ravel() for s in test])
    all_foreground = dice(np.ones_like(gt), gt)
    assert dice(np.zeros_like(gt), gt) == 0.0
    assert report["num_images"] == len(test) == 8
    assert report["pooled"]["dice"] > 0.7, report["pooled"]
    assert report["pooled"]["dice"] > all_foreground + 0.4
    assert report["pooled"]["auc"] > 0.95
    assert "pooled" in proc.stdout and "dice" in proc.stdout
    losses = [float(line.split(",")[2]) for line in (work / "log.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), "training loss did not fall"


def test_test_tool_reproduces_the_training_report(trained_run, tmp_path):
    work, _, cache = trained_run
    os.environ["JMEDSEG_CACHE"] = str(cache)
    out = tmp_path / "report.json"
    proc = run("test.py", work / "best.npz", "--out", out)
    report, train_report = json.loads(out.read_text()), json.loads((work / "test_report.json").read_text())
    assert report["pooled"]["dice"] == pytest.approx(train_report["pooled"]["dice"], abs=1e-9)
    assert "hd95" in proc.stdout


def test_predict_writes_masks_equal_to_reloaded_model(trained_run, tmp_path):
    from jmedseg.checkpoint import load_checkpoint
    from jmedseg.data import load_image, synthetic_root
    from jmedseg.engine import labels_from_probs, predict_probs
    from jmedseg.data import read_image_file

    work, _, cache = trained_run
    os.environ["JMEDSEG_CACHE"] = str(cache)
    images = synthetic_root() / "test" / "images"
    out = tmp_path / "pred"
    run("predict.py", work / "best.npz", "-i", images, "-o", out, "--probs")
    files = sorted(images.iterdir())
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{f.stem}_{kind}.png" for f in files for kind in ("mask", "overlay", "prob"))
    model, _ = load_checkpoint(work / "best.npz")
    image = load_image(files[0], in_channels=3)
    expected = labels_from_probs(predict_probs(model, image), 0.5) * 255
    np.testing.assert_array_equal(read_image_file(out / f"{files[0].stem}_mask.png"), expected)
    assert read_image_file(out / f"{files[0].stem}_overlay.png").shape == image.shape[:2] + (3,)

    tiled = tmp_path / "tiled"
    run("predict.py", work / "best.npz", "-i", files[0], "-o", tiled, "--tile-size", "64", "--tta")
    agreement = (read_image_file(tiled / f"{files[0].stem}_mask.png") == expected).mean()
    assert agreement > 0.95


@pytest.mark.parametrize("args, message", [
    (["train.py", "--model", "unnet"], "unknown model 'unnet' (did you mean 'unet'"),
    (["train.py", "--set", "train.lrr=1"], "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    (["train.py", "--data", "/nonexistent/data"], "/nonexistent/data: dataset folder not found"),
    (["train.py", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
    (["test.py", "/nonexistent.npz"], "/nonexistent.npz: checkpoint file not found"),
    (["predict.py", "/nonexistent.npz", "-i", "/nonexistent.png", "-o", "/tmp/x"], "/nonexistent.png: no such file"),
])
def test_bad_input_is_one_line_error(args, message):
    proc = run(*args, check=False)
    assert proc.returncode == 2
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and message in err_lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def option_help_entries(help_text):
    """{option invocation: its help text} from argparse's ``--help`` output."""
    entries, current = {}, None
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            current, _, text = line.strip().partition("  ")
            entries[current] = text.strip()
        elif current and line.startswith("    "):
            entries[current] = (entries[current] + " " + line.strip()).strip()
        else:
            current = None
    return entries


COMMAND_LINE_TOOLS = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "tools").glob("*.py")) + [
    "ssl_pretrain/moco.py"]


@pytest.mark.parametrize("tool", COMMAND_LINE_TOOLS)
def test_every_option_says_what_it_does_and_its_default_once(tool):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / tool), "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    entries = option_help_entries(proc.stdout)
    assert entries and "-h, --help" in entries
    for option, text in entries.items():
        assert text, f"{tool}: {option} has no help"
        assert text.count("(default") <= 1 and "(default: None)" not in text, f"{tool}: {option}: {text}"


def test_speed_tool_prints_one_json_line():
    proc = run("speed.py", "--model", "unet", "--mode", "infer", "--size", "64", "--steps", "2", "--warmup", "1",
               "--set", "model.args.base_channels=4")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mode"] == "infer" and result["params"] > 0 and result["median_s"] > 0


def test_a_child_killed_by_a_signal_is_reported_not_a_silent_exit():
    # Jittor's own SIGCHLD handler would end the parent with status 1 and no message; after the
    # project's backend import, the parent sees the child's signal and carries on.
    script = ("import signal, subprocess, sys\n"
              "from model_zoo.backend import jt\n"
              "child = subprocess.run([sys.executable, '-c', 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'])\n"
              "print('child status', child.returncode)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0 and "child status -9" in proc.stdout, proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc thread attributes")
def test_new_threads_get_stacks_large_enough_for_jittors_compile_threads():
    # Jittor's compile threads overflowed a default thread stack in std::regex and the process died
    # of SIGSEGV without a message; the backend raises the default before Jittor starts its threads.
    # The child starts with a 1 MiB stack limit, which is also glibc's default thread stack size then.
    script = ("import ctypes\n"
              "from model_zoo.backend import jt\n"
              "libc = ctypes.CDLL(None)\n"
              "attr, size = ctypes.create_string_buffer(256), ctypes.c_size_t()\n"
              "assert libc.pthread_getattr_default_np(attr) == 0\n"
              "assert libc.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0\n"
              "print('default thread stack', size.value)\n")

    def small_stack():
        resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                          preexec_fn=small_stack)
    assert proc.returncode == 0, proc.stderr
    assert f"default thread stack {64 << 20}" in proc.stdout


def test_kernels_compile_on_the_calling_thread_unless_the_user_asks_for_compile_threads():
    # Jittor's compile threads crashed now and then on a cold kernel cache (SIGSEGV in thread 'C2'
    # while building kernels); the backend turns them off, and a user's own setting still wins.
    script = "from model_zoo.backend import jt\nprint('compile threads', jt.flags.use_parallel_op_compiler)\n"
    env = {k: v for k, v in os.environ.items() if k != "use_parallel_op_compiler"}
    default = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    chosen = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={**env, "use_parallel_op_compiler": "4"})
    assert default.returncode == 0 and chosen.returncode == 0, default.stderr + chosen.stderr
    assert "compile threads 0" in default.stdout
    assert "compile threads 4" in chosen.stdout


def test_env_report_runs():
    proc = subprocess.run([sys.executable, "-m", "jmedseg.env"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0
    for key in ("jittor", "device", "onednn", "jittor_cache"):
        assert key in proc.stdout
