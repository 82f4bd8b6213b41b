"""Atomic file writing: a crash never leaves a truncated file in place of a good one."""
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .distributed import check_writer

__all__ = ["atomic_write", "write_json", "write_text"]


@contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``."""
    path = Path(path)
    check_writer(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path, text):
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path, obj):
    """Strict JSON (non-finite floats become null, so any parser reads it), written atomically."""
    write_text(path, json.dumps(_finite(obj), indent=2, default=_to_builtin, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        return _finite(obj.item())
    return obj


def _to_builtin(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
