import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def kill_after_checkpoint(command, checkpoint, settle=0.0, timeout=300):
    """Start ``command``, SIGKILL it ``settle`` seconds after ``checkpoint`` first appears."""
    child = subprocess.Popen([str(c) for c in command], cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not checkpoint.exists():
        assert child.poll() is None, f"{command[1]} ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(settle)
    child.send_signal(signal.SIGKILL)
    child.wait()


def materialise(model):
    """Compute a model's lazily drawn initial weights now, as the trainer does.

    Otherwise the first pass fuses their drawing into its kernels, and a cold Jittor cache compiles
    each graph twice: once with the drawing, once on the materialised weights.
    """
    from model_zoo.backend import jt

    jt.sync(list(model.state_dict().values()))
    return model


def zero_gradient_names(model, x):
    """Names of the parameters whose gradient is exactly zero under a fixed random weighting of the outputs.

    The gradient tests all build this one graph, so each network's backward kernels compile once.
    """
    from model_zoo.backend import jt

    params = [p for p in model.parameters() if not p.name().endswith(("running_mean", "running_var"))]
    jt.set_seed(0)  # the same dropout masks for every call
    out = model(x)
    outputs = out if isinstance(out, (list, tuple)) else [out]
    weights = jt.array(np.random.RandomState(1).randn(*tuple(outputs[0].shape)).astype("float32"))
    grads = jt.grad(sum((o * weights).mean() for o in outputs), params)
    return {p.name() for p, g in zip(params, grads) if not np.abs(g.numpy()).sum() > 0}


def shared_data_root():
    """Real datasets: $JMEDSEG_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("JMEDSEG_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_runtest_logstart(nodeid, location):
    # .ci/run names the last test started when the process dies before pytest can report it.
    trail = os.environ.get("JMEDSEG_TEST_TRAIL")
    if trail:
        Path(trail).write_text(nodeid + "\n")


@pytest.fixture(scope="session")
def drive_root():
    root = shared_data_root() / "DRIVE"
    if not (root / "train" / "images").is_dir():
        pytest.skip(f"DRIVE not found at {root} (set JMEDSEG_DATA to the folder holding DRIVE/)")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # The synthetic dataset is generated once per test session into a private cache.
    monkeypatch.setenv("JMEDSEG_CACHE", str(tmp_path_factory.getbasetemp() / "jmedseg-cache"))
