"""Jittor start-up for this project: the one module imported before ``jittor`` anywhere.

Importing it (``from model_zoo.backend import jt``) makes ``import jittor`` work offline:

* CUDA is used only when a driver and a GPU answer; otherwise ``nvcc_path`` is emptied so Jittor
  neither initialises CUDA (it crashes where ``nvcc`` exists without a runtime) nor downloads a
  CUDA toolkit.
* oneDNN comes from the PyPI wheels ``onednn-cpu-gomp``/``onednn-devel-cpu-gomp``: Jittor only
  accepts a folder ``<jittor home>/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp`` with ``include/``
  and ``lib/libmkldnn.so``, so that folder is made of links to the wheel's files. Without oneDNN
  Jittor's CPU convolutions are ~90x slower; when it cannot be set up we say so once.
* Jittor's start-up info lines are hidden; warnings after start-up are kept.
* SIGCHLD gets its default action back: Jittor's handler would end the process silently when a
  child process dies of a signal.
* Kernels are compiled one at a time on the calling thread (``use_parallel_op_compiler=0``):
  Jittor's pool of compile threads crashed now and then on a cold kernel cache (SIGSEGV in a
  thread named ``C<n>``), killing the process. A cold cache compiles more slowly (the test
  suite on a cold cache, 2 cores: 18 min in the CI run that crashed, 33 min without the threads);
  a warm one is unaffected.
* New threads get stacks of at least 64 MiB, for users who turn the compile threads back on:
  building a fused kernel's source recurses once per character in ``std::regex`` and overflowed
  the usual 8 MiB in them, which kills the process without a message. (The main thread is safe:
  Jittor raises its stack limit to 512 MiB where the hard limit allows.)

Environment variables set by the user always win (``use_mkl``, ``nvcc_path``, ``log_silent``,
``use_parallel_op_compiler``).
``JMEDSEG_DEVICE=cpu|cuda`` forces the device before import; ``set_device`` switches after.
"""
import ctypes
import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

__all__ = ["jt", "report", "set_device", "cuda_available", "onednn_status"]

_DNNL_DIR_NAME = "dnnl_lnx_2.2.0_cpu_gomp"

onednn_status = "not set up"


def cuda_available():
    """True when the CUDA driver loads and reports at least one device."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return False
        return count.value > 0
    return False


def jittor_home():
    """The folder Jittor keeps its caches under (same rule as ``jittor_utils.home``)."""
    if os.environ.get("JITTOR_HOME"):
        return Path(os.environ["JITTOR_HOME"]).resolve()
    config = Path.home() / ".cache" / "jittor" / "config.json"
    try:
        return Path(json.loads(config.read_text()).get("JITTOR_HOME", Path.home())).resolve()
    except (OSError, ValueError):
        return Path.home().resolve()


def _find_onednn_wheel():
    """(include dir, libdnnl.so.2 path) from the PyPI oneDNN 2.x wheels, or a reason string."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        lib = Path(prefix) / "lib" / "libdnnl.so.2"
        include = Path(prefix) / "include"
        if lib.exists() and (include / "dnnl.hpp").exists():
            return include, lib
    return "the wheels onednn-cpu-gomp==2022.2.1 and onednn-devel-cpu-gomp==2022.2.1 are not installed"


def _link(target, link):
    if link.is_symlink() or link.exists():
        if link.is_symlink() and os.readlink(link) == str(target):
            return
        link.unlink()
    link.symlink_to(target)


def _setup_onednn():
    """Point Jittor's oneDNN folder at the wheel; return None on success or the reason it failed."""
    found = _find_onednn_wheel()
    if isinstance(found, str):
        return found
    include, lib = found
    home = jittor_home() / ".cache" / "jittor" / "mkl" / _DNNL_DIR_NAME
    try:
        (home / "lib").mkdir(parents=True, exist_ok=True)
        _link(include, home / "include")
        _link(lib, home / "lib" / "libmkldnn.so")
        _link(lib, home / "lib" / "libdnnl.so.2")
    except OSError as err:
        return f"cannot write {home}: {err}"
    return None


def _configure_environment():
    global onednn_status
    forced = os.environ.get("JMEDSEG_DEVICE", "").lower()
    if forced not in ("", "cpu", "cuda"):
        raise SystemExit(f"error: JMEDSEG_DEVICE={forced!r}: expected 'cpu' or 'cuda'")
    if "nvcc_path" not in os.environ and (forced == "cpu" or not cuda_available()):
        os.environ["nvcc_path"] = ""
    if "use_mkl" in os.environ:
        onednn_status = "on (use_mkl set by user)" if os.environ["use_mkl"] == "1" else "off (use_mkl=0 set by user)"
    else:
        reason = _setup_onednn()
        if reason is None:
            os.environ["use_mkl"] = "1"
            onednn_status = "on"
        else:
            os.environ["use_mkl"] = "0"
            onednn_status = f"off ({reason})"
            warnings.warn(f"jmedseg: oneDNN is off, CPU convolutions will be ~90x slower: {reason}",
                          RuntimeWarning, stacklevel=3)
    os.environ.setdefault("log_silent", "1")
    os.environ.setdefault("use_parallel_op_compiler", "0")
    return forced


def _restore_sigchld():
    """Give SIGCHLD its default action back from Jittor.

    Jittor's handler ends the whole process with exit status 1, printing nothing useful, as soon as
    any child process stops or dies of a signal. The project's subprocesses (MoCo pretraining under
    ``--sas``, benchmark workers, the ablation's runs, the test suite's tools) are watched through
    their exit status instead, so their failure is reported, not turned into a silent exit.
    """
    if hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


_THREAD_STACK_BYTES = 64 << 20


def _enlarge_thread_stacks():
    """Make new threads' default stack at least 64 MiB (glibc; virtual memory, touched only as used).

    Jittor builds a fused kernel's source with ``std::regex``, whose matcher recurses once per
    character: on a compile thread a large kernel overflowed the default thread stack (the
    ``ulimit -s`` size, usually 8 MiB), and the process died of SIGSEGV with no message at all,
    since the overflow leaves no stack for a handler. Kernels compile on the main thread unless
    the user sets ``use_parallel_op_compiler``; this keeps that choice safe too. Must run before
    Jittor starts its threads.
    """
    try:
        libc = ctypes.CDLL(None)
        get_default, set_default = libc.pthread_getattr_default_np, libc.pthread_setattr_default_np
    except (OSError, AttributeError):
        return
    attr = ctypes.create_string_buffer(256)  # larger than any pthread_attr_t
    size = ctypes.c_size_t()
    if get_default(attr) != 0:
        return
    if libc.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0 and size.value < _THREAD_STACK_BYTES:
        if libc.pthread_attr_setstacksize(attr, ctypes.c_size_t(_THREAD_STACK_BYTES)) == 0:
            set_default(attr)
    libc.pthread_attr_destroy(attr)


def _import_jittor(forced):
    user_silent = os.environ["log_silent"]
    _enlarge_thread_stacks()
    import jittor
    import jittor_utils

    # Start-up chatter is over; from here on keep Jittor's warnings visible.
    if user_silent == "1" and not os.environ.get("JMEDSEG_QUIET_ALL"):
        jittor.flags.log_silent = 0
        jittor_utils.LOG.log_silent = 0
        jittor.flags.log_v = 0
    _restore_sigchld()
    if forced == "cuda" and not jittor.has_cuda:
        raise SystemExit("error: JMEDSEG_DEVICE=cuda but Jittor found no usable CUDA device")
    jittor.flags.use_cuda = int(bool(jittor.has_cuda) and forced != "cpu")
    return jittor


def set_device(device):
    """Select ``'cpu'``, ``'cuda'`` or ``'auto'`` (CUDA when present); returns the device in use."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not jt.has_cuda:
        raise ValueError("device 'cuda' requested but no usable CUDA device was found")
    jt.flags.use_cuda = int(device == "cuda" or (device == "auto" and bool(jt.has_cuda)))
    return "cuda" if jt.flags.use_cuda else "cpu"


def report():
    """A dict describing the backend: versions, device, oneDNN, threads and cache folder."""
    import numpy
    return {
        "python": sys.version.split()[0],
        "jittor": jt.__version__,
        "numpy": numpy.__version__,
        "device": "cuda" if jt.flags.use_cuda else "cpu",
        "cuda_available": bool(jt.has_cuda),
        "onednn": onednn_status if jt.compile_extern.mkl_ops is not None or not onednn_status.startswith("on")
        else "off (Jittor did not load its mkl ops)",
        "cpu_count": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS", "default (all cores)"),
        "compile_threads": jt.flags.use_parallel_op_compiler or "none (kernels compile on the calling thread)",
        "jittor_cache": str(Path(jt.compiler.cache_path)),
    }


jt = _import_jittor(_configure_environment())
