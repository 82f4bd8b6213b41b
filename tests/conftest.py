import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_root():
    """Real datasets: $JMEDSEG_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("JMEDSEG_DATA", REPO_ROOT.parent / "shared" / "data"))


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
