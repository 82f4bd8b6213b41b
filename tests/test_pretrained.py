"""Reading torch.save files without torch or code execution, and strict loading into backbones."""
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from conftest import REPO_ROOT
from model_zoo import ModelZooError
from model_zoo.backbones import BasicBlock
from model_zoo.backbones.pretrained import adapt_input_conv, load_pretrained, read_torch_weights
from model_zoo.backbones.vit import VisionTransformer
from model_zoo.backend import jt

nn = jt.nn

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "tiny_torch_state.pth"


# --- A writer for the pickle stream torch.save produces (protocol 2), built opcode by opcode. ---

class Global:
    """A ``GLOBAL module name`` opcode: how a pickle names a function or class."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """``func(*args)`` in the stream (REDUCE)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class PersistentId:
    """A persistent id (BINPERSID): how torch refers to a storage file."""

    def __init__(self, *fields):
        self.fields = fields


def _emit(obj, out):
    if isinstance(obj, Global):
        out += pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, Call):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out += pickle.REDUCE
    elif isinstance(obj, PersistentId):
        _emit(tuple(obj.fields), out)
        out += pickle.BINPERSID
    elif isinstance(obj, bool):
        out += pickle.NEWTRUE if obj else pickle.NEWFALSE
    elif isinstance(obj, int):
        out += pickle.BININT + struct.pack("<i", obj)
    elif isinstance(obj, str):
        data = obj.encode()
        out += pickle.BINUNICODE + struct.pack("<I", len(data)) + data
    elif isinstance(obj, tuple):
        out += pickle.MARK
        for item in obj:
            _emit(item, out)
        out += pickle.TUPLE
    elif isinstance(obj, OrderedDict):
        _emit(Call(Global("collections", "OrderedDict")), out)
        if obj:  # a state dict: its items, then BUILD sets its _metadata attribute, as torch writes it
            _emit_items(obj, out)
            _emit({"_metadata": {}}, out)
            out += pickle.BUILD
    elif isinstance(obj, dict):
        out += pickle.EMPTY_DICT
        _emit_items(obj, out)
    else:
        raise TypeError(type(obj))


def _emit_items(mapping, out):
    out += pickle.MARK
    for key, value in mapping.items():
        _emit(key, out)
        _emit(value, out)
    out += pickle.SETITEMS


def tensor(key, storage="FloatStorage", offset=0, size=(), stride=(), numel=1):
    """``torch._utils._rebuild_tensor_v2`` of storage ``key``, as torch pickles a tensor."""
    pid = PersistentId("storage", Global("torch", storage), key, "cpu", numel)
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), pid, offset, tuple(size), tuple(stride), False,
                OrderedDict())


def contiguous(key, array, storage="FloatStorage"):
    strides = [int(np.prod(array.shape[i + 1:])) for i in range(array.ndim)]
    return tensor(key, storage, 0, array.shape, strides, array.size)


def write_torch_file(path, obj, storages, byteorder="little", root="archive"):
    """A zip laid out like torch.save's: ``<root>/data.pkl``, ``<root>/data/<key>``, ``<root>/byteorder``."""
    stream = bytearray(pickle.PROTO + b"\x02")
    _emit(obj, stream)
    stream += pickle.STOP
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{root}/data.pkl", bytes(stream))
        if byteorder is not None:
            archive.writestr(f"{root}/byteorder", byteorder)
        for key, raw in storages.items():
            archive.writestr(f"{root}/data/{key}", raw)
        archive.writestr(f"{root}/version", "3\n")
    return path


def write_state(path, arrays, **kwargs):
    """A torch-style file holding the OrderedDict ``arrays`` (one storage per float32 array)."""
    entries = OrderedDict((k, contiguous(str(i), a)) for i, (k, a) in enumerate(arrays.items()))
    storages = {str(i): np.ascontiguousarray(a, dtype="<f4").tobytes() for i, a in enumerate(arrays.values())}
    return write_torch_file(path, entries, storages, **kwargs)


# --- A tiny backbone with torchvision's ResNet names. ---

class TinyResNet(nn.Module):
    """``conv1``/``bn1`` stem and one ``layer1`` BasicBlock at width 4: torchvision names, tiny."""

    def __init__(self, in_channels=3, width=4):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(BasicBlock(width, width))

    def execute(self, x):
        return self.layer1(self.bn1(self.conv1(x)))


def _formula_state(model):
    """Distinct, exactly representable values for every state-dict entry of ``model``."""
    state = OrderedDict()
    for i, (key, value) in enumerate(model.state_dict().items()):
        shape = tuple(value.shape)
        state[key] = ((np.arange(int(np.prod(shape))) % 13 - 6).reshape(shape) / 4 + i).astype("float32")
    return state


def _model_arrays(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


# --- Reading ---

def test_reads_state_dict_with_views_dtypes_and_byte_order(tmp_path):
    base = np.arange(12, dtype="<f4")
    entries = OrderedDict([
        ("whole", tensor("0", size=(3, 4), stride=(4, 1), numel=12)),
        ("rows_1_2", tensor("0", offset=4, size=(2, 4), stride=(4, 1), numel=12)),  # shares storage 0
        ("transposed", tensor("0", size=(4, 3), stride=(1, 4), numel=12)),
        ("half", tensor("1", "HalfStorage", size=(2,), stride=(1,), numel=2)),
        ("bf16", tensor("2", "BFloat16Storage", size=(2,), stride=(1,), numel=2)),
        ("steps", tensor("3", "LongStorage", size=(), stride=(), numel=1)),
    ])
    storages = {"0": base.tobytes(), "1": np.array([1.5, -2.0], "<f2").tobytes(),
                # bfloat16 is the top 16 bits of a float32: 0x3FC0 -> 1.5, 0xC040 -> -3.0
                "2": np.array([0x3FC0, 0xC040], "<u2").tobytes(), "3": np.array([7], "<i8").tobytes()}
    weights = read_torch_weights(write_torch_file(tmp_path / "w.pth", entries, storages))
    assert list(weights) == ["whole", "rows_1_2", "transposed", "half", "bf16", "steps"]
    expected = np.arange(12, dtype="float32").reshape(3, 4)
    np.testing.assert_array_equal(weights["whole"], expected)
    np.testing.assert_array_equal(weights["rows_1_2"], expected[1:])
    np.testing.assert_array_equal(weights["transposed"], expected.T)
    np.testing.assert_array_equal(weights["half"], [1.5, -2.0])
    assert weights["half"].dtype == np.float16
    np.testing.assert_array_equal(weights["bf16"], [1.5, -3.0])
    assert weights["bf16"].dtype == np.float32
    assert weights["steps"] == 7 and weights["steps"].dtype == np.int64

    big = {"0": base.astype(">f4").tobytes(), "1": np.array([1.5, -2.0], ">f2").tobytes(),
           "2": np.array([0x3FC0, 0xC040], ">u2").tobytes(), "3": np.array([7], ">i8").tobytes()}
    swapped = read_torch_weights(write_torch_file(tmp_path / "big.pth", entries, big, byteorder="big"))
    for key in weights:
        np.testing.assert_array_equal(swapped[key], weights[key])


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_unwraps_checkpoint_dicts(tmp_path, wrapper):
    arrays = OrderedDict([("a", np.ones((2, 2), "float32")), ("b", np.zeros(3, "float32"))])
    entries = OrderedDict((k, contiguous(str(i), a)) for i, (k, a) in enumerate(arrays.items()))
    checkpoint = {wrapper: entries, "epoch": 90, "arch": "tiny"}
    storages = {str(i): a.tobytes() for i, a in enumerate(arrays.values())}
    weights = read_torch_weights(write_torch_file(tmp_path / "ckpt.pth", checkpoint, storages))
    assert sorted(weights) == ["a", "b"]
    np.testing.assert_array_equal(weights["a"], np.ones((2, 2)))


def test_file_without_byteorder_entry_is_little_endian(tmp_path):
    path = write_state(tmp_path / "old.pth", OrderedDict(w=np.array([1.0, 2.0], "float32")), byteorder=None)
    np.testing.assert_array_equal(read_torch_weights(path)["w"], [1.0, 2.0])


# --- Safety ---

@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("torch.nn.modules.conv", "Conv2d")])
def test_refuses_and_never_calls_other_globals(tmp_path, module, name):
    marker = tmp_path / "pwned"
    payload = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w')"
    path = write_torch_file(tmp_path / "evil.pth", Call(Global(module, name), payload), {})
    with pytest.raises(ModelZooError, match=rf"evil\.pth: refusing to unpickle global '{module}\.{name}'"):
        read_torch_weights(path)
    assert not marker.exists()


def test_global_nested_inside_a_state_dict_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    entries = OrderedDict(w=contiguous("0", np.zeros(2, "float32")),
                          x=Call(Global("os", "system"), f"touch {marker}"))
    path = write_torch_file(tmp_path / "evil.pth", entries, {"0": np.zeros(2, "<f4").tobytes()})
    with pytest.raises(ModelZooError, match="os.system"):
        read_torch_weights(path)
    assert not marker.exists()


def test_view_outside_its_storage_is_an_error(tmp_path):
    entries = OrderedDict(w=tensor("0", offset=2, size=(4,), stride=(1,), numel=4))
    path = write_torch_file(tmp_path / "oob.pth", entries, {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(ModelZooError, match=r"oob\.pth: unreadable torch pickle: .*outside its storage of 4"):
        read_torch_weights(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ModelZooError, match="weights file not found"):
        read_torch_weights(tmp_path / "missing.pth")
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02\x8a\x0alegacy torch file")
    with pytest.raises(ModelZooError, match=r"legacy\.pth: not a zip-format torch.save file"):
        read_torch_weights(tmp_path / "legacy.pth")
    path = write_torch_file(tmp_path / "no_storage.pth", OrderedDict(w=tensor("9", numel=1)), {})
    with pytest.raises(ModelZooError, match="storage '9' is missing"):
        read_torch_weights(path)


# --- A real torch.save file (made once by tests/fixtures/make_tiny_torch_state.py) ---

_FIXTURE_FLOAT_KEYS = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                       "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                       "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var", "layer1.0.conv2.weight",
                       "layer1.0.bn2.weight", "layer1.0.bn2.bias", "layer1.0.bn2.running_mean",
                       "layer1.0.bn2.running_var", "fc.weight", "fc.bias"]


def test_reads_a_real_torch_save_file():
    weights = read_torch_weights(FIXTURE)
    floats = [k for k in weights if not k.endswith("num_batches_tracked")]
    assert floats == _FIXTURE_FLOAT_KEYS
    assert list(weights["conv1.weight"].shape) == [4, 3, 3, 3] and list(weights["fc.weight"].shape) == [10, 4]
    for k, key in enumerate(floats):
        value = weights[key]
        i = np.arange(value.size)
        np.testing.assert_array_equal(value.ravel(), k + ((i % 11) - 5) / 8, err_msg=key)
    tracked = [k for k in weights if k.endswith("num_batches_tracked")]
    assert tracked == ["bn1.num_batches_tracked", "layer1.0.bn1.num_batches_tracked",
                       "layer1.0.bn2.num_batches_tracked"]
    assert all(weights[k] == 7 and weights[k].dtype == np.int64 for k in tracked)


def test_loads_a_real_torch_save_file_into_a_backbone():
    model = TinyResNet()
    skipped = load_pretrained(model, FIXTURE)
    assert skipped == ["bn1.num_batches_tracked", "fc.bias", "fc.weight", "layer1.0.bn1.num_batches_tracked",
                       "layer1.0.bn2.num_batches_tracked"]
    expected = read_torch_weights(FIXTURE)
    got = _model_arrays(model)
    assert set(got) == set(_FIXTURE_FLOAT_KEYS) - {"fc.weight", "fc.bias"}
    for key, value in got.items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


# --- Strict loading ---

def test_load_pretrained_copies_every_tensor(tmp_path):
    model = TinyResNet()
    arrays = _formula_state(model)
    arrays["fc.weight"] = np.ones((10, 4), "float32")  # classifier heads are dropped
    assert load_pretrained(model, write_state(tmp_path / "w.pth", arrays)) == ["fc.weight"]
    got = _model_arrays(model)
    for key, value in got.items():
        np.testing.assert_array_equal(value, arrays[key], err_msg=key)


def test_mismatch_is_one_error_listing_everything(tmp_path):
    model = TinyResNet()
    arrays = _formula_state(model)
    del arrays["layer1.0.conv2.weight"]
    arrays["layer2.0.conv1.weight"] = np.zeros((4, 4, 3, 3), "float32")
    arrays["bn1.bias"] = np.zeros(5, "float32")
    with pytest.raises(ModelZooError) as err:
        load_pretrained(model, write_state(tmp_path / "w.pth", arrays))
    message = str(err.value)
    assert "\n" not in message and "w.pth: weights do not match TinyResNet" in message
    assert "missing: layer1.0.conv2.weight" in message
    assert "unexpected: layer2.0.conv1.weight" in message
    assert "mis-shaped: bn1.bias [5] vs model [4]" in message


def test_prefix_and_ignore(tmp_path):
    model = TinyResNet()
    arrays = _formula_state(model)
    stored = OrderedDict((f"backbone.{k}", v) for k, v in arrays.items())
    stored["backbone.aux.weight"] = np.zeros(3, "float32")
    stored["decode_head.conv.weight"] = np.zeros(3, "float32")  # outside the prefix: not considered
    path = write_state(tmp_path / "seg.pth", stored)
    with pytest.raises(ModelZooError, match="unexpected: aux.weight"):
        load_pretrained(model, path, prefix="backbone.")
    assert load_pretrained(model, path, prefix="backbone.", ignore=("aux.*",)) == ["aux.weight"]
    np.testing.assert_array_equal(model.conv1.weight.numpy(), arrays["conv1.weight"])


def test_adapt_input_conv_keeps_the_grey_response():
    rgb = np.array([1.0, 2.0, 3.0], "float32").reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(adapt_input_conv(rgb, 1).ravel(), [6.0])
    np.testing.assert_array_equal(adapt_input_conv(rgb, 2).ravel(), [3.0, 3.0])
    np.testing.assert_array_equal(adapt_input_conv(rgb, 4).ravel(), [1.5] * 4)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_stem_is_adapted_for_other_channel_counts(tmp_path, in_channels):
    arrays = _formula_state(TinyResNet())
    model = TinyResNet(in_channels=in_channels)
    load_pretrained(model, write_state(tmp_path / "w.pth", arrays))
    stem = model.conv1.weight.numpy()
    assert stem.shape == (4, in_channels, 3, 3)
    expected = arrays["conv1.weight"].sum(axis=1, keepdims=True) / in_channels
    np.testing.assert_allclose(stem, np.repeat(expected, in_channels, axis=1), rtol=1e-6)
    # Same response to a grey image as the RGB stem gives to it copied into R, G and B.
    rgb = TinyResNet()
    rgb.load_parameters(dict(arrays))
    grey = np.random.RandomState(0).rand(1, 1, 8, 8).astype("float32")
    np.testing.assert_allclose(model.conv1(jt.array(np.repeat(grey, in_channels, 1))).numpy(),
                               rgb.conv1(jt.array(np.repeat(grey, 3, 1))).numpy(), rtol=1e-5, atol=1e-5)


def test_vit_loads_timm_names(tmp_path):
    vit = VisionTransformer(in_channels=3, embed_dim=8, depth=2, num_heads=2, img_size=32)
    arrays = _formula_state(vit)
    arrays["head.weight"] = np.zeros((10, 8), "float32")
    arrays["head.bias"] = np.zeros(10, "float32")
    assert "blocks.1.attn.qkv.weight" in arrays and "patch_embed.proj.weight" in arrays
    assert load_pretrained(vit, write_state(tmp_path / "vit.pth", arrays)) == ["head.bias", "head.weight"]
    np.testing.assert_array_equal(vit.pos_embed.numpy(), arrays["pos_embed"])
    np.testing.assert_array_equal(vit.blocks[1].mlp.fc2.weight.numpy(), arrays["blocks.1.mlp.fc2.weight"])
