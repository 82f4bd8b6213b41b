"""Data-parallel training under mpirun: 2 ranks follow 1 rank, files are written once, MoCo stays consistent.

The mpirun tests need Open MPI (``openmpi-bin``, ``libopenmpi-dev``; ``.ci/run`` installs them) and
skip with that message where it is missing. The rank helpers are tested without it.
"""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jmedseg import distributed as dist
from jmedseg.errors import ConfigError

from conftest import REPO_ROOT

needs_mpi = pytest.mark.skipif(shutil.which("mpirun") is None or shutil.which("mpicc") is None,
                               reason="Open MPI not installed (apt-get install openmpi-bin libopenmpi-dev)")

TINY_RUN = ['model.args={"base_channels":8}', "train.iterations=16", "train.batch_size=4", "data.patch_size=64",
            "train.log_interval=1", "train.val_interval=8", "train.checkpoint_interval=8", "eval.distances=false"]


def mpirun(ranks, *args, timeout=600):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    command = ["mpirun", "-np", str(ranks), sys.executable, *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def single(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- rank helpers, no MPI needed ---------------------------------------------------------------------
def test_single_process_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK", raising=False)
    assert (dist.world_size(), dist.rank(), dist.is_main(), dist.is_distributed()) == (1, 0, True, False)
    batch = np.arange(6)
    assert np.array_equal(dist.shard(batch), batch)
    assert dist.mean_over_ranks(2.5) == 2.5 and dist.divergence(np.ones(3)) == 0.0


def test_shards_are_disjoint_and_cover_the_global_batch(monkeypatch):
    batch = np.arange(12)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    shards = []
    for r in range(3):
        monkeypatch.setenv("OMPI_COMM_WORLD_RANK", str(r))
        assert dist.local_batch_size(12, "train.batch_size") == 4
        shards.append(dist.shard(batch))
    assert np.array_equal(np.concatenate(shards), batch)
    with pytest.raises(ConfigError, match=r"train.batch_size: the global batch 10 must be divisible by the 3"):
        dist.local_batch_size(10, "train.batch_size")


def test_only_rank_zero_may_write(monkeypatch, tmp_path):
    from jmedseg.config import load_config
    from jmedseg.io import write_text

    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    with pytest.raises(RuntimeError, match="rank 1 tried to write"):
        write_text(tmp_path / "log.csv", "x")
    with pytest.raises(RuntimeError, match="rank 1 tried to write"):
        load_config(None).dump(tmp_path / "config.yaml")
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    write_text(tmp_path / "log.csv", "x")
    assert (tmp_path / "log.csv").read_text() == "x"


# -- under mpirun ------------------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_follow_one_rank_and_write_each_file_once(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train = REPO_ROOT / "tools" / "train.py"
    result = single(train, "--model", "unet", "--work-dir", one, "--no-progress", "--set", *TINY_RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    result = mpirun(2, train, "--model", "unet", "--work-dir", two, "--no-progress", "--set", *TINY_RUN)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # Only rank 0 prints (and writes: the other rank's writers raise, which would fail the run).
    assert result.stdout.count("run folder:") == 1 and result.stdout.count("test report:") == 1
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    losses_one = [float(r["loss"]) for r in read_csv(one / "log.csv")]
    losses_two = [float(r["loss"]) for r in read_csv(two / "log.csv")]
    assert len(losses_one) == len(losses_two) == 16
    # Same global batch and synchronised BatchNorm: only the summation order differs.
    np.testing.assert_allclose(losses_two, losses_one, rtol=2e-3)
    val_one, val_two = read_csv(one / "val.csv"), read_csv(two / "val.csv")
    assert [r["step"] for r in val_two] == ["8", "16"]  # validated once per interval, not once per rank
    np.testing.assert_allclose([float(r["dice"]) for r in val_two], [float(r["dice"]) for r in val_one],
                               rtol=1e-2, atol=1e-3)


@needs_mpi
def test_global_batch_must_divide_over_ranks(tmp_path):
    result = mpirun(2, REPO_ROOT / "tools" / "train.py", "--model", "unet", "--work-dir", tmp_path / "run",
                    "--no-progress", "--set", *TINY_RUN, "train.batch_size=3")
    assert result.returncode != 0
    assert "train.batch_size: the global batch 3 must be divisible by the 2 MPI ranks" in result.stderr
    assert "Traceback" not in result.stderr


@needs_mpi
def test_moco_ranks_share_queue_and_key_encoder(tmp_path):
    run = tmp_path / "moco"
    result = mpirun(2, REPO_ROOT / "ssl_pretrain" / "moco.py", "--work-dir", run, "--no-progress",
                    "--set", 'model.args={"base_channels":8}', "--iterations", "8", "--batch", "8",
                    "--bn-splits", "2", "--queue", "64", "--dim", "16", "--hidden-dim", "32", "--log-interval", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 ranks agree: the same queue and key encoder on every rank (largest difference 0.0e+00)" in result.stdout
    assert len(read_csv(run / "log.csv")) == 8
    assert (run / "encoder.npz").is_file() and (run / "last.npz").is_file()


@needs_mpi
def test_divergence_detects_ranks_that_differ():
    # Both ranks compute both values (collectives); rank 0 reports them, so lines cannot interleave.
    code = ("import numpy as np; from jmedseg import distributed as d; "
            "same = d.divergence(np.ones(4)); differ = d.divergence(np.full(4, float(d.rank()))); "
            "d.is_main() and print('same', same, 'differ', differ)")
    result = mpirun(2, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "same 0.0 differ 0.5" in result.stdout
