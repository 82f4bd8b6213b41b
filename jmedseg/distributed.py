"""Data-parallel training over MPI on Jittor's distributed engine.

``mpirun -np N python tools/train.py ...`` (Open MPI) starts N copies of the program, one rank each.
Jittor itself then

* averages every gradient over the ranks inside ``optimizer.step`` / ``optimizer.backward``
  (an all-reduce mean before the update), so all ranks apply the same update;
* synchronises BatchNorm in training: the batch mean and mean square are all-reduced, so the
  statistics are those of the global batch, exactly as in a single process.

This module adds what the project needs on top of it: the rank and world size, the shard of a
global batch each rank computes, collectives on NumPy values (mean, gather, barrier, broadcasting a
model from rank 0), and the rule that only rank 0 writes run files (:func:`check_writer`, called by
every project writer). Rank and size come from Open MPI's environment, the same variables Jittor
tests, so importing this module does not import Jittor.
"""
import os

import numpy as np

from .errors import ConfigError

__all__ = ["world_size", "rank", "is_main", "is_distributed", "check_backend", "local_batch_size", "shard",
           "mean_over_ranks", "gather_rows", "divergence", "barrier", "broadcast_state", "check_writer"]


def world_size():
    """Number of MPI ranks (1 outside ``mpirun``)."""
    return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))


def rank():
    """This process's MPI rank (0 outside ``mpirun``)."""
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))


def is_main():
    """True on rank 0, the only rank that prints progress and writes files."""
    return rank() == 0


def is_distributed():
    return world_size() > 1


def _jt():
    from model_zoo.backend import jt
    return jt


def check_backend():
    """Raise a one-line error when ``mpirun`` started several ranks but Jittor has no MPI support."""
    if is_distributed() and _jt().mpi is None:
        raise ConfigError(f"mpirun started {world_size()} ranks but Jittor has no MPI support: it compiles its "
                          "MPI ops with mpicc, which was not found (install openmpi-bin and libopenmpi-dev)")


def local_batch_size(global_batch, key):
    """The per-rank share of ``global_batch``; ``key`` names the setting in the error when it does not divide."""
    n = world_size()
    if global_batch % n:
        raise ConfigError(f"{key}: the global batch {global_batch} must be divisible by the {n} MPI ranks "
                          f"(each rank computes batch / ranks items)")
    return global_batch // n


def shard(batch):
    """This rank's contiguous slice (along axis 0) of a global batch that every rank holds."""
    n, r = world_size(), rank()
    size = len(batch) // n
    return batch[r * size:(r + 1) * size]


def mean_over_ranks(values):
    """Element-wise mean over ranks of a float or float array (the value itself in one process)."""
    if not is_distributed():
        return values
    jt = _jt()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = jt.array(array).mpi_all_reduce("mean").numpy()
    return float(mean[0]) if np.ndim(values) == 0 else mean.reshape(np.shape(values))


def gather_rows(array):
    """Concatenate every rank's ``array`` (same shape on all ranks) along axis 0, in rank order.

    Written as an all-reduce sum of zero-padded blocks (Jittor has no all-gather); exact, since each
    element is the sum of one value and zeros.
    """
    if not is_distributed():
        return array
    jt = _jt()
    array = np.asarray(array)
    padded = np.zeros((world_size(),) + array.shape, dtype=array.dtype)
    padded[rank()] = array
    return jt.array(padded).mpi_all_reduce("add").numpy().reshape((-1,) + array.shape[1:])


def divergence(array):
    """Largest absolute difference between any rank's ``array`` and the mean over ranks (0 in one process).

    Every rank gets the same answer; used to check that state meant to be identical is.
    """
    if not is_distributed():
        return 0.0
    array = np.asarray(array, dtype=np.float64)
    local = float(np.abs(array - mean_over_ranks(array)).max(initial=0.0))
    return float(gather_rows(np.array([local])).max())


def barrier():
    """Wait until every rank gets here."""
    if is_distributed():
        _jt().array(np.zeros(1, np.float32)).mpi_all_reduce("add").sync()


def broadcast_state(module):
    """Overwrite every parameter and buffer of ``module`` with rank 0's values.

    Ranks seed Jittor's generator differently (``jt.set_global_seed`` adds the rank), so freshly
    built models differ until this runs.
    """
    if not is_distributed():
        return
    jt = _jt()
    for value in module.state_dict().values():
        if isinstance(value, jt.Var):
            value.update(value.mpi_broadcast(0))
    jt.sync_all()


def check_writer(path):
    """Refuse a write from any rank but 0, so a distributed run never writes a file twice."""
    if not is_main():
        raise RuntimeError(f"{path}: rank {rank()} tried to write; in an MPI run only rank 0 writes files")
