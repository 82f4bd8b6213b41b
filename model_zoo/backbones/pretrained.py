"""ImageNet weights for the backbones from PyTorch files, read without torch and without running code.

A file written by ``torch.save`` (PyTorch >= 1.6, the default zip format) is a zip archive with
one top folder ``<archive>/`` holding ``data.pkl`` (a pickle of the state dict whose tensors
name their storages by persistent id), ``data/<key>`` (the raw bytes of storage ``key``) and
``byteorder`` (``little`` or ``big``; files older than PyTorch 2.1 lack it and are little-endian).

Pickles can run arbitrary code (any global can be called), so ``data.pkl`` is read by an
unpickler that resolves only what a state dict needs: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` / ``_rebuild_parameter_with_state``
(mapped to numpy stand-ins that build arrays) and the ``torch.*Storage`` classes (dtype markers).
Any other global (``os.system``, a pickled ``nn.Module`` class, ``argparse.Namespace``, ...)
raises ``ModelZooError`` naming it before anything is called. Storages are read from the zip
by their persistent id and every tensor view is bounds-checked against its storage.

``load_pretrained`` then copies the weights strictly into a backbone whose parameter names are
torchvision's or timm's (``model_zoo.backbones``). Nothing is ever downloaded.
"""
import fnmatch
import functools
import math
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from ..registry import ModelZooError

__all__ = ["read_torch_weights", "load_pretrained", "adapt_input_conv", "DEFAULT_SKIP"]

# Classifier heads and BatchNorm's step counter, which no backbone has.
DEFAULT_SKIP = ("fc.*", "classifier.*", "head.*", "*num_batches_tracked")

# torch storage class -> numpy dtype of its elements; bfloat16 is read as its raw 16 bits.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}


class _StorageType:
    """What the unpickler hands out for ``torch.<Name>Storage``: the element dtype of a storage."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """The elements of one storage file, and whether they are bfloat16 bit patterns."""

    def __init__(self, array, bfloat16):
        self.array, self.bfloat16 = array, bfloat16


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """``torch._utils._rebuild_tensor_v2``: the view ``(offset, size, stride)`` of a storage, copied."""
    if not (isinstance(storage, _Storage) and isinstance(storage_offset, int) and isinstance(size, tuple)
            and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride))):
        raise ValueError(f"malformed tensor: offset {storage_offset!r}, size {size!r}, stride {stride!r}")
    array = storage.array
    numel = math.prod(size)
    if numel:
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= array.size or numel > array.size:
            raise ValueError(f"tensor of size {list(size)} at offset {storage_offset} lies outside its storage "
                             f"of {array.size} elements")
        view = np.lib.stride_tricks.as_strided(array[storage_offset:], shape=size,
                                               strides=[st * array.itemsize for st in stride], writeable=False)
    else:
        view = np.empty(size, array.dtype)
    tensor = np.array(view, order="C")
    # bfloat16 is the upper half of a float32: widen the bit patterns.
    return (tensor.astype(np.uint32) << 16).view(np.float32) if storage.bfloat16 else tensor


def _rebuild_parameter(data, *unused):
    """``torch._utils._rebuild_parameter(_with_state)``: a parameter is its tensor."""
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): "UntypedStorage",
    **{("torch", name): name for name in _STORAGE_DTYPES},
}


class _RefusedGlobal(Exception):
    """The pickle names a global outside the allowed set."""


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip archive, resolving only ``_ALLOWED_GLOBALS``."""

    def __init__(self, stream, archive, root, byteorder):
        super().__init__(stream)
        self.archive, self.root, self.byteorder = archive, root, byteorder
        self.storages = {}

    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise _RefusedGlobal(f"{module}.{name}")
        if isinstance(target, str):
            return _StorageType(target)
        # A fresh wrapper per reference, so that BUILD opcodes cannot alter the shared stand-ins.
        return target if target is OrderedDict else functools.partial(target)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise ValueError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], pid[2]
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.root}data/{key}")
            except KeyError:
                raise ValueError(f"storage '{key}' is missing from the archive") from None
            stored = storage_type.dtype.newbyteorder("<" if self.byteorder == "little" else ">")
            usable = len(raw) - len(raw) % stored.itemsize
            array = np.frombuffer(raw[:usable], dtype=stored).astype(storage_type.dtype)
            self.storages[key] = _Storage(array, storage_type.name == "BFloat16Storage")
        return self.storages[key]


def _unwrap(obj, path):
    """The state dict inside a checkpoint: the object itself or its ``state_dict`` / ``model`` entry."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ModelZooError(f"{path}: no state dict found (expected a dict of tensors, or one under "
                            f"'state_dict' or 'model')")
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, np.ndarray))
    if not_tensors:
        raise ModelZooError(f"{path}: state dict entries that are not tensors: {', '.join(not_tensors[:5])}")
    return {str(k): v for k, v in obj.items()}


def read_torch_weights(path):
    """Read the state dict of a ``torch.save`` file (``.pth``/``.pt``) as numpy arrays, safely.

    Args:
        path: a zip-format file written by ``torch.save`` holding a state dict, or a dict with the
            state dict under ``"state_dict"`` or ``"model"`` (the rest of such a dict must also be
            made of tensors, dicts, lists and numbers).

    Returns:
        ``{name: numpy array}`` (bfloat16 tensors widened to float32).

    Raises:
        ModelZooError: the file is missing, not a zip-format torch file, refers to a global that a
            state dict never needs (named in the message; nothing is called), or is malformed.
    """
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ModelZooError(f"{path}: weights file not found") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelZooError(f"{path}: not a zip-format torch.save file (legacy PyTorch < 1.6 files must be "
                            f"re-saved with a recent PyTorch): {err}") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ModelZooError(f"{path}: not a torch.save archive (expected one '<name>/data.pkl', "
                                f"found {len(pickles)})")
        root = pickles[0][:-len("data.pkl")]
        byteorder = "little"
        if f"{root}byteorder" in archive.namelist():
            byteorder = archive.read(f"{root}byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise ModelZooError(f"{path}: unknown byte order {byteorder!r}")
        try:
            with archive.open(pickles[0]) as stream:
                obj = _WeightsUnpickler(stream, archive, root, byteorder).load()
        except _RefusedGlobal as refused:
            raise ModelZooError(f"{path}: refusing to unpickle global '{refused}': a weights file needs only "
                                f"tensors, storages and OrderedDict, and this one could run code "
                                f"(save model.state_dict() rather than the model)") from None
        except Exception as err:  # any malformed pickle: one clear error, never a crash deep inside pickle
            raise ModelZooError(f"{path}: unreadable torch pickle: {type(err).__name__}: {err}") from None
    return _unwrap(obj, path)


def adapt_input_conv(weight, in_channels):
    """Turn RGB filters ``O x 3 x kh x kw`` into filters for ``in_channels`` input channels.

    Every new input channel gets the sum of the three RGB filters divided by ``in_channels``.
    An image whose ``in_channels`` channels all equal a grey image ``g`` then gets exactly the
    response the RGB network gives to ``g`` copied into R, G and B; with one channel this is the
    sum of the RGB filters (timm's rule), with more it keeps the activation scale.
    """
    summed = weight.sum(axis=1, keepdims=True) / in_channels
    return np.repeat(summed, in_channels, axis=1).astype(weight.dtype)


def load_pretrained(backbone, path, prefix="", ignore=()):
    """Load ImageNet weights from a PyTorch file into ``backbone`` strictly, without torch.

    Checkpoint names must be the backbone's own (torchvision's for ResNet/VGG, timm's for ViT).

    Args:
        backbone: a ``model_zoo.backbones`` module (or any module with matching names).
        path: a ``torch.save`` zip file (see ``read_torch_weights``); never downloaded.
        prefix: use only checkpoint keys starting with this and strip it (e.g. ``"module."`` for
            DataParallel checkpoints, ``"backbone."`` for a detector's); other keys are ignored.
        ignore: extra shell-style patterns of (prefix-stripped) checkpoint keys to skip, on top of
            ``DEFAULT_SKIP`` (classifier ``fc.*``/``classifier.*``/``head.*``, ``num_batches_tracked``).

    When the backbone reads ``in_channels != 3``, the stem convolution (the only 4-D weight that
    reads 3 channels in the checkpoint) is adapted with ``adapt_input_conv``.

    Returns:
        The checkpoint keys that were skipped, sorted.

    Raises:
        ModelZooError: unreadable or unsafe file (see ``read_torch_weights``), or one error listing
            every missing, unexpected and mis-shaped key.
    """
    weights = read_torch_weights(path)
    weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    patterns = DEFAULT_SKIP + tuple(ignore)
    skipped = {k for k in weights if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    given = {k: v for k, v in weights.items() if k not in skipped}
    state = backbone.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for key in set(state) & set(given):
        ckpt, model = given[key].shape, shapes[key]
        if (len(ckpt) == len(model) == 4 and ckpt[1] == 3 and model[1] != 3
                and ckpt[:1] + ckpt[2:] == model[:1] + model[2:]):
            given[key] = adapt_input_conv(given[key], model[1])
    missing = sorted(set(state) - set(given))
    unexpected = sorted(set(given) - set(state))
    misshaped = sorted(f"{k} {list(given[k].shape)} vs model {list(shapes[k])}"
                       for k in set(state) & set(given) if tuple(given[k].shape) != shapes[k])
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ModelZooError(f"{path}: weights do not match {type(backbone).__name__}"
                            f"{f' (prefix {prefix!r})' if prefix else ''}: " + "; ".join(problems))
    backbone.load_parameters({k: given[k].astype(str(state[k].dtype)) for k in state})
    return sorted(skipped)
