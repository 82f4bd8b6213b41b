import os
import signal
import subprocess
import time
from pathlib import Path

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
