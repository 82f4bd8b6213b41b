"""Checkpoints that cannot execute code when loaded: one ``.npz`` of arrays plus JSON metadata.

Layout: every model tensor under ``model/<state-dict key>``, optional optimizer buffers under
``optim/<group>/<buffer>/<index>``, any other state a caller adds (e.g. ``queue/keys`` of MoCo's
memory bank), and the metadata (model name and arguments, config, training
state) as UTF-8 JSON bytes under ``__meta__``. Loading uses ``np.load(allow_pickle=False)``, so an
object array (pickle) is refused, and is strict: missing, unexpected or mis-shaped keys are an
error listing them. Writes are atomic.
"""
import json
import zipfile

import numpy as np

from .errors import CheckpointError
from .io import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "load_model_state",
           "model_state", "load_optimizer_state", "arrays_under", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META_KEY = "__meta__"


def model_state(model):
    """The model's parameters and buffers as numpy arrays, keyed like its state dict."""
    return {k: np.asarray(v.numpy()) for k, v in model.state_dict().items()}


def arrays_under(arrays, prefix):
    """The checkpoint arrays whose names start with ``prefix``, keyed by the rest of the name."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _optimizer_buffers(optimizer):
    """``(key, Var)`` for every per-parameter buffer (Adam's moments, SGD's momentum, …)."""
    for gi, group in enumerate(optimizer.param_groups):
        n = len(group["params"])
        for name, value in group.items():
            if name in ("params", "grads") or not isinstance(value, list) or len(value) != n:
                continue
            for i, var in enumerate(value):
                yield f"optim/{gi}/{name}/{i}", var


def _optimizer_arrays(optimizer):
    return {key: np.asarray(var.numpy()) for key, var in _optimizer_buffers(optimizer)}


def save_checkpoint(path, model, meta, optimizer=None, extra_arrays=None):
    """Write ``model`` (and optionally ``optimizer``'s buffers) with JSON-serialisable ``meta``.

    ``extra_arrays`` (name -> array, names outside ``model/`` and ``optim/``) are stored as they are.
    """
    arrays = {f"model/{k}": v for k, v in model_state(model).items()}
    for name, value in (extra_arrays or {}).items():
        if name.startswith(("model/", "optim/")) or name == _META_KEY:
            raise ValueError(f"extra array name {name!r} clashes with the checkpoint layout")
        arrays[name] = np.asarray(value)
    meta = dict(meta, format_version=FORMAT_VERSION)
    if optimizer is not None:
        arrays.update(_optimizer_arrays(optimizer))
        meta["optimizer_step"] = int(getattr(optimizer, "n_step", 0))
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def read_checkpoint(path):
    """Return ``(meta, arrays)`` from a checkpoint file, refusing anything but plain arrays."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise CheckpointError(f"{path}: refusing to load pickled objects; not a jmedseg checkpoint") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not an .npz file: {err})") from None
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path}: no '{_META_KEY}' entry; not a jmedseg checkpoint")
    try:
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict) or "name" not in meta["model"]:
        raise CheckpointError(f"{path}: metadata lacks the model name and arguments ('model.name')")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r} is not supported "
                              f"(expected {FORMAT_VERSION})")
    return meta, arrays


def load_model_state(model, arrays, source="checkpoint", prefix="model/"):
    """Strictly copy ``arrays`` (keys ``prefix + state-dict key``) into ``model``.

    Raises CheckpointError listing missing, unexpected and mis-shaped keys.
    """
    state = model.state_dict()
    given = arrays_under(arrays, prefix)
    missing = sorted(set(state) - set(given))
    unexpected = sorted(set(given) - set(state))
    mismatched = sorted(f"{k} {list(given[k].shape)} vs model {list(state[k].shape)}"
                        for k in set(state) & set(given) if tuple(given[k].shape) != tuple(state[k].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
        if keys:
            shown = ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the model: " + "; ".join(problems))
    model.load_parameters(given)
    return len(state)


def load_optimizer_state(optimizer, arrays, meta, source="checkpoint"):
    """Restore the buffers written by ``save_checkpoint(..., optimizer=...)``."""
    from model_zoo.backend import jt

    buffers = dict(_optimizer_buffers(optimizer))
    if set(buffers) != {k for k in arrays if k.startswith("optim/")}:
        raise CheckpointError(f"{source}: optimizer state does not match the optimizer")
    for key, var in buffers.items():
        var.assign(jt.array(arrays[key]))
    optimizer.n_step = int(meta.get("optimizer_step", 0))


def load_checkpoint(path):
    """Build the model a checkpoint describes (wrapped in its STN when it was trained with one) and
    load its weights strictly.

    Returns ``(model, meta)``; the model is in eval mode.
    """
    from model_zoo import ModelZooError, create_model
    from model_zoo.stn import wrap_with_stn

    meta, arrays = read_checkpoint(path)
    spec = meta["model"]
    try:
        model = create_model(spec["name"], **spec.get("args", {}))
        if spec.get("stn"):
            model = wrap_with_stn(model, identity_tolerance=spec.get("stn_tolerance", 0.0))
    except (ModelZooError, TypeError) as err:
        raise CheckpointError(f"{path}: metadata describes a model that cannot be built: {err}") from None
    load_model_state(model, arrays, source=str(path))
    model.eval()
    return model, meta
