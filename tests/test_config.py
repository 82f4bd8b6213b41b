"""Tests of jmedseg.config: inheritance, overrides, validation messages, dump/reload."""
from pathlib import Path

import pytest

from jmedseg.augment import resolve_ops
from jmedseg.config import CHOICES, DEFAULT_CONFIG_PATH, NULLABLE, Config, load_config
from jmedseg.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# Benchmark profiles (configs/benchmark/) are not training configs; jmedseg.benchmark validates them.
SHIPPED_CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "benchmark" not in p.relative_to(CONFIG_DIR).parts)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and access -------------------------------------------------------------------


def test_defaults_without_a_file():
    cfg = load_config()
    assert cfg.source is None
    assert cfg.model.name == "unet"
    assert cfg.train.lr == 0.001 and cfg.train.batch_size == 8 and cfg.train.iterations == 200
    assert cfg.train.loss == {"ce": 0.5, "dice": 0.5}
    assert cfg.data.root is None and cfg.data.mode == "patch" and cfg.data.patch_size == 64
    assert cfg.eval.tile_size is None and cfg.device == "auto" and cfg.work_dir is None


def test_access_styles(tmp_path):
    path = write(tmp_path / "a.yaml", "model:\n  args: {base_channels: 16}\ntrain:\n  lr: 0.01\n")
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.train.lr == cfg["train"]["lr"] == cfg.get("train.lr") == 0.01
    assert cfg.get("model.args.base_channels") == 16
    assert cfg.get("train.nope") is None and cfg.get("train.nope", 3) == 3
    assert cfg.get("train.lr.deeper") is None
    assert dict(**cfg.model.args) == {"base_channels": 16}
    assert isinstance(cfg.train, Config) and cfg.train.source == str(path)
    with pytest.raises(AttributeError, match="'nope'"):
        cfg.train.nope
    with pytest.raises(KeyError):
        cfg["nope"]


def test_to_dict_is_a_plain_copy():
    cfg = load_config()
    plain = cfg.to_dict()
    assert type(plain) is dict and type(plain["train"]) is dict and type(plain["train"]["loss"]) is dict
    plain["train"]["lr"] = 5.0
    plain["train"]["loss"]["ce"] = 9.0
    assert cfg.train.lr == 0.001 and cfg.train.loss["ce"] == 0.5


def test_schema_tables_match_default_yaml():
    cfg = load_config(DEFAULT_CONFIG_PATH)
    for key, choices in CHOICES.items():
        assert cfg.get(key) in choices
    for key in NULLABLE:
        assert cfg.get(key, "missing") != "missing"


# --- inheritance ---------------------------------------------------------------------------


def test_single_base_later_wins(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  lr: 0.01\n  batch_size: 2\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\ntrain:\n  lr: 0.02\n")
    cfg = load_config(child)
    assert cfg.train.lr == 0.02
    assert cfg.train.batch_size == 2
    assert cfg.train.iterations == 200  # from the defaults


def test_two_level_chain_with_relative_paths(tmp_path):
    write(tmp_path / "root.yaml", "train:\n  lr: 0.1\n  batch_size: 2\n  iterations: 7\n")
    write(tmp_path / "mid" / "mid.yaml", "_base_: ../root.yaml\ntrain:\n  batch_size: 3\n  iterations: 8\n")
    leaf = write(tmp_path / "mid" / "leaf" / "leaf.yaml", "_base_: ../mid.yaml\ntrain:\n  iterations: 9\n")
    cfg = load_config(leaf)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.iterations) == (0.1, 3, 9)


def test_list_base_merges_in_order(tmp_path):
    write(tmp_path / "x.yaml", "train:\n  lr: 0.1\n  batch_size: 2\ndata:\n  patch_size: 64\n")
    write(tmp_path / "y.yaml", "train:\n  lr: 0.2\n  iterations: 30\n")
    child = write(tmp_path / "c.yaml", "_base_: [x.yaml, y.yaml]\ntrain:\n  iterations: 40\n")
    cfg = load_config(child)
    assert cfg.train.lr == 0.2  # y.yaml comes after x.yaml
    assert cfg.train.batch_size == 2 and cfg.data.patch_size == 64
    assert cfg.train.iterations == 40  # the file itself beats its bases


def test_diamond_bases_are_not_a_cycle(tmp_path):
    write(tmp_path / "common.yaml", "train:\n  seed: 7\n")
    write(tmp_path / "a.yaml", "_base_: common.yaml\n")
    write(tmp_path / "b.yaml", "_base_: common.yaml\n")
    assert load_config(write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\n")).train.seed == 7


def test_free_form_mappings_are_replaced_not_merged(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  loss: {ce: 1, dice: 1}\nmodel:\n  args: {base_channels: 8, depth: 3}\n")
    child = write(tmp_path / "c.yaml", "_base_: base.yaml\ntrain:\n  loss: {dice: 1}\nmodel:\n  args: {depth: 4}\n")
    cfg = load_config(child)
    assert cfg.train.loss == {"dice": 1.0}
    assert cfg.model.args == {"depth": 4}


def test_empty_file_and_empty_section_give_defaults(tmp_path):
    assert load_config(write(tmp_path / "empty.yaml", "")).train.lr == 0.001
    cfg = load_config(write(tmp_path / "s.yaml", "train:\n  # lr: 0.5\ndata:\n  patch_size: 64\n"))
    assert cfg.train.lr == 0.001 and cfg.data.patch_size == 64


def test_exponent_floats_in_files(tmp_path):
    cfg = load_config(write(tmp_path / "e.yaml", "train:\n  lr: 2e-3\n  weight_decay: 1E-4\n  min_lr: 1.5e-6\n"))
    assert cfg.train.lr == 0.002 and cfg.train.weight_decay == 0.0001 and cfg.train.min_lr == 1.5e-6


# --- overrides -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.lr=1e-3", "train.lr", 0.001),
        ("train.lr=0.05", "train.lr", 0.05),
        ("train.iterations=20", "train.iterations", 20),
        ("data.flip=false", "data.flip", False),
        ("eval.tta=true", "eval.tta", True),
        ("data.name=DRIVE", "data.name", "DRIVE"),
        ("data.root=/data/drive", "data.root", "/data/drive"),
        ("data.test_split=null", "data.test_split", None),
        ("eval.tile_size=128", "eval.tile_size", 128),
        ("train.aux_weights=[0.4, 0.2]", "train.aux_weights", [0.4, 0.2]),
        ("model.args={base_channels: 16}", "model.args", {"base_channels": 16}),
        ("train.loss={dice: 1}", "train.loss", {"dice": 1.0}),
        ("train.epochs=3", "train.epochs", 3),
        ("device = cpu", "device", "cpu"),
    ],
)
def test_override_values(override, key, expected):
    value = load_config(overrides=[override]).to_dict()
    for part in key.split("."):
        value = value[part]
    assert value == expected
    assert type(value) is type(expected)


def test_int_is_converted_where_a_number_is_expected():
    cfg = load_config(overrides=["train.lr=1", "train.grad_clip=5", "train.aux_weights=[1, 0]"])
    assert type(cfg.train.lr) is float and cfg.train.lr == 1.0
    assert type(cfg.train.grad_clip) is float and cfg.train.grad_clip == 5.0
    assert [type(w) for w in cfg.train.aux_weights] == [float, float]


def test_override_into_a_free_form_mapping_keeps_other_entries(tmp_path):
    path = write(tmp_path / "a.yaml", "model:\n  args: {base_channels: 32, depth: 4}\n")
    cfg = load_config(path, ["model.args.base_channels=16", "train.loss.dice=1"])
    assert cfg.model.args == {"base_channels": 16, "depth": 4}
    assert cfg.train.loss == {"ce": 0.5, "dice": 1.0}


def test_overrides_beat_the_file_and_apply_in_order(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  lr: 0.01\n  batch_size: 2\n")
    cfg = load_config(path, ["train.lr=0.5", "train.lr=0.25"])
    assert cfg.train.lr == 0.25 and cfg.train.batch_size == 2


def test_section_override_merges_into_the_section(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  batch_size: 2\n")
    cfg = load_config(path, ["train={lr: 0.5}"])
    assert cfg.train.lr == 0.5 and cfg.train.batch_size == 2


# --- errors --------------------------------------------------------------------------------


def test_unknown_key_in_file_suggests_the_closest(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  lrr: 0.1\n")
    message = error_of(path)
    assert message.startswith(str(path) + ":")
    assert "unknown key 'train.lrr'" in message and "did you mean 'train.lr'?" in message


def test_unknown_key_names_the_base_file_that_set_it(tmp_path):
    base = write(tmp_path / "base.yaml", "data:\n  patchsize: 64\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\n")
    message = error_of(child)
    assert message.startswith(str(base) + ":")
    assert "'data.patchsize'" in message and "did you mean 'data.patch_size'?" in message


def test_unknown_section_suggests_a_section(tmp_path):
    message = error_of(write(tmp_path / "a.yaml", "trian:\n  lr: 0.1\n"))
    assert "unknown key 'trian'" in message and "did you mean 'train'?" in message


def test_key_in_the_wrong_place_suggests_its_section(tmp_path):
    message = error_of(write(tmp_path / "a.yaml", "train:\n  threshold: 0.3\n"))
    assert "unknown key 'train.threshold'" in message and "did you mean 'eval.threshold'?" in message
    message = error_of(write(tmp_path / "b.yaml", "lr: 0.1\n"))
    assert "unknown key 'lr'" in message and "did you mean 'train.lr'?" in message


def test_unknown_key_without_a_close_match_lists_the_section():
    message = error_of(overrides=["eval.zzzz=1"])
    assert "unknown key 'eval.zzzz'" in message
    assert "threshold, use_fov, tta, distances, tile_size, tile_overlap" in message


def test_unknown_key_in_an_override_names_the_override():
    message = error_of(overrides=["train.lrr=1e-3"])
    assert message.startswith("override 'train.lrr=1e-3':")
    assert "did you mean 'train.lr'?" in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr=abc", "'train.lr' must be a number, got 'abc' (str)"),
        ("train.lr=true", "'train.lr' must be a number, got True (bool)"),
        ("train.lr=null", "'train.lr' must be a number, got null"),
        ("train.lr=.inf", "'train.lr' must be a finite number"),
        ("train.iterations=1.5", "'train.iterations' must be an integer, got 1.5 (float)"),
        ("train.batch_size=true", "'train.batch_size' must be an integer, got True (bool)"),
        ("data.flip=1", "'data.flip' must be true or false, got 1 (int)"),
        ("data.name=[a]", "'data.name' must be a string, got ['a'] (list)"),
        ("eval.tile_size=big", "'eval.tile_size' must be an integer or null, got 'big' (str)"),
        ("train.aux_weights=0.4", "'train.aux_weights' must be a list, got 0.4 (float)"),
        ("model.args=3", "'model.args' must be a mapping, got 3 (int)"),
        ("train=5", "'train' must be a mapping of keys, got 5 (int)"),
    ],
)
def test_wrong_types(override, expected):
    message = error_of(overrides=[override])
    assert message.startswith(f"override {override!r}:")
    assert expected in message


def test_wrong_type_in_file_names_the_file(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  lr: abc\n")
    assert error_of(path) == f"{path}: 'train.lr' must be a number, got 'abc' (str)"


@pytest.mark.parametrize(
    "override, choices",
    [
        ("data.mode=crop", "'patch', 'resize'"),
        ("data.preprocess=clahe", "'none', 'green_clahe'"),
        ("train.optimizer=rmsprop", "'adam', 'adamw', 'sgd'"),
        ("train.scheduler=linear", "'poly', 'cosine', 'step', 'constant'"),
        ("device=gpu", "'auto', 'cpu', 'cuda'"),
    ],
)
def test_value_not_in_choices_lists_them(override, choices):
    key, _, value = override.partition("=")
    message = error_of(overrides=[override])
    assert f"'{key}' must be one of {choices}, got '{value}'" in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr=-0.1", "'train.lr' must be > 0, got -0.1"),
        ("train.lr=0", "'train.lr' must be > 0, got 0.0"),
        ("train.batch_size=0", "'train.batch_size' must be >= 1, got 0"),
        ("data.val_fraction=-0.1", "'data.val_fraction' must be in [0, 1), got -0.1"),
        ("data.val_fraction=1", "'data.val_fraction' must be in [0, 1), got 1.0"),
        ("data.patch_size=16", "'data.patch_size' must be >= 32, got 16"),
        ("eval.threshold=1.5", "'eval.threshold' must be in [0, 1], got 1.5"),
        ("eval.threshold=-0.01", "'eval.threshold' must be in [0, 1], got -0.01"),
        ("eval.tile_overlap=1", "'eval.tile_overlap' must be in [0, 1), got 1.0"),
        ("model.num_classes=0", "'model.num_classes' must be >= 1, got 0"),
        ("train.seed=-1", "'train.seed' must be in [0, 4294967295], got -1"),
        ("train.grad_clip=0", "'train.grad_clip' must be > 0, got 0.0"),
        ("train.loss={ce: -1, dice: 1}", "'train.loss' weights must be numbers >= 0, got 'ce': -1"),
        ("train.loss={ce: x}", "'train.loss' weights must be numbers >= 0, got 'ce': 'x'"),
        ("train.loss={}", "'train.loss' must name at least one loss"),
        ("train.loss={ce: 0}", "'train.loss' must give at least one loss a weight > 0"),
        ("train.aux_weights=[0.4, -1]", "'train.aux_weights' must hold numbers >= 0, got -1"),
        ("model.args={1: 2}", "'model.args' must have string keys, got 1 (int)"),
        ("model.name=''", "'model.name' must not be empty"),
    ],
)
def test_impossible_values(override, expected):
    assert expected in error_of(overrides=[override])


def test_range_limits_themselves_are_accepted():
    cfg = load_config(
        overrides=["data.patch_size=32", "eval.threshold=0", "eval.threshold=1", "train.batch_size=1",
                   "train.loss={ce: 0, dice: 1}", "eval.tile_overlap=0"]
    )
    assert cfg.data.patch_size == 32 and cfg.eval.threshold == 1.0 and cfg.train.loss == {"ce": 0.0, "dice": 1.0}


def test_malformed_overrides():
    assert "expected KEY=VALUE" in error_of(overrides=["train.lr"])
    assert "expected KEY=VALUE" in error_of(overrides=["=1"])
    assert "expected KEY=VALUE" in error_of(overrides=["train..lr=1"])
    assert "'train.lr' is 0.001, not a mapping" in error_of(overrides=["train.lr.x=1"])
    assert "invalid YAML value" in error_of(overrides=["train.loss={ce: 1"])


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"{path}: config file not found"


def test_missing_base_is_named(tmp_path):
    child = write(tmp_path / "c.yaml", "_base_: gone.yaml\n")
    assert error_of(child) == f"{tmp_path / 'gone.yaml'}: config file not found"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "train:\n  lr: 0.1\n  batch_size: [1, 2\n")
    message = error_of(path)
    assert message.startswith(f"{path}: invalid YAML at line ")
    line = int(message.split("at line ")[1].split(",")[0])
    assert line in (3, 4)  # the unclosed list opens on line 3; PyYAML reports where it gave up


def test_python_tags_are_rejected(tmp_path):
    path = write(tmp_path / "evil.yaml", "train: !!python/object/apply:os.system ['true']\n")
    assert error_of(path).startswith(f"{path}: invalid YAML at line 1")


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path / "list.yaml", "- train\n- lr\n")
    message = error_of(path)
    assert message.startswith(f"{path}:") and "top level must be a mapping" in message and "list" in message


def test_bad_base_value(tmp_path):
    path = write(tmp_path / "a.yaml", "_base_: 3\n")
    assert "'_base_' must be a path or a list of paths, got 3" in error_of(path)


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: c.yaml\n")
    write(tmp_path / "c.yaml", "_base_: a.yaml\n")
    message = error_of(tmp_path / "a.yaml")
    assert "_base_ cycle" in message
    assert message.count("a.yaml") == 3 and "b.yaml" in message and "c.yaml" in message


def test_self_base_is_a_cycle(tmp_path):
    path = write(tmp_path / "self.yaml", "_base_: self.yaml\n")
    assert "_base_ cycle" in error_of(path)


def test_from_dict_validates_and_fills_defaults():
    cfg = Config.from_dict({"train": {"lr": 0.5}}, source="ckpt.pkl")
    assert cfg.train.lr == 0.5 and cfg.train.batch_size == 8 and cfg.source == "ckpt.pkl"
    assert Config.from_dict(cfg) == cfg
    with pytest.raises(ConfigError, match=r"^ckpt\.pkl: unknown key 'train\.lrr'"):
        Config.from_dict({"train": {"lrr": 0.5}}, source="ckpt.pkl")


# --- dump and shipped configs --------------------------------------------------------------


def test_dump_reload_round_trip(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  lr: 2e-4\n  aux_weights: [0.4, 0.2]\n")
    path = write(tmp_path / "a.yaml", "_base_: base.yaml\nmodel:\n  args: {base_channels: 16}\ndata:\n  root: /x/y\n")
    cfg = load_config(path, ["eval.tile_size=128"])
    out = tmp_path / "work" / "config.yaml"
    cfg.dump(out)
    assert "_base_" not in out.read_text()
    reloaded = load_config(out)
    assert reloaded.to_dict() == cfg.to_dict()
    assert reloaded.train.lr == 0.0002 and reloaded.eval.tile_size == 128
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temporary file left


def test_dump_replaces_an_existing_file(tmp_path):
    out = write(tmp_path / "config.yaml", "old")
    load_config(overrides=["train.lr=0.3"]).dump(out)
    assert load_config(out).train.lr == 0.3


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert load_config(path, ["train.iterations=2"]).train.iterations == 2


def test_shipped_configs_were_found():
    names = {str(p.relative_to(CONFIG_DIR)) for p in SHIPPED_CONFIGS}
    assert {"default.yaml", "synthetic/unet.yaml", "drive/unet.yaml", "kvasir/unet.yaml"} <= names


def test_dataset_configs_match_their_data():
    drive = load_config(CONFIG_DIR / "drive" / "unet.yaml")
    assert (drive.data.name, drive.model.in_channels, drive.data.preprocess) == ("DRIVE", 1, "green_clahe")
    kvasir = load_config(CONFIG_DIR / "kvasir" / "unet.yaml")
    assert (kvasir.data.mode, kvasir.eval.use_fov, kvasir.model.in_channels) == ("resize", False, 3)


# --- data.augment ----------------------------------------------------------------------------


def test_augment_defaults_to_null_and_a_preset_becomes_its_ops():
    assert load_config().data.augment is None
    cfg = load_config(overrides=["data.augment=sas"])
    assert cfg.data.augment == resolve_ops("sas") and cfg.data.augment


def test_augment_inline_list_and_file_survive_dump_and_reload(tmp_path):
    cfg = load_config(overrides=["data.augment=[{name: gamma, p: 0.3, range: [0.7, 1.5]}]"])
    assert cfg.data.augment == [{"name": "gamma", "p": 0.3, "range": [0.7, 1.5]}]
    ops = write(tmp_path / "ops.yaml", "- {name: blur, p: 1, sigma: 2}\n")
    cfg = load_config(write(tmp_path / "a.yaml", f"data:\n  augment: {ops}\n"))
    assert cfg.data.augment == [{"name": "blur", "p": 1.0, "sigma": [2.0, 2.0]}]
    cfg.dump(tmp_path / "saved.yaml")
    ops.unlink()  # the saved config holds the ops themselves
    assert load_config(tmp_path / "saved.yaml").data.augment == cfg.data.augment
    assert Config.from_dict(cfg.to_dict()).data.augment == cfg.data.augment


def test_augment_mixin_config_composes_with_a_dataset_config(tmp_path):
    path = write(tmp_path / "drive_sas.yaml", f"_base_: [{CONFIG_DIR / 'drive' / 'unet.yaml'}, "
                                              f"{CONFIG_DIR / 'augment' / 'sas.yaml'}]\n")
    cfg = load_config(path)
    assert cfg.data.name == "DRIVE" and cfg.data.preprocess == "green_clahe"
    assert cfg.data.augment == resolve_ops("sas")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.augment=3", "'data.augment' must be a preset name, a .yaml file or a list of ops or null, got 3 (int)"),
        ("data.augment=[{name: gama}]", "data.augment: entry 1: unknown augmentation 'gama' (did you mean 'gamma'?)"),
        ("data.augment=strong", "data.augment: 'strong' is neither a preset nor a .yaml/.yml file"),
        ("data.augment=/nonexistent/ops.yaml", "/nonexistent/ops.yaml: augmentation file not found"),
    ],
)
def test_augment_errors(override, expected):
    assert expected in error_of(overrides=[override])
