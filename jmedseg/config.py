"""YAML experiment configs: ``_base_`` inheritance, ``key=value`` overrides and validation.

The schema is ``configs/default.yaml``: it lists every key with its default, and the type of
the default is the type a value must have. This module adds only what a default cannot say:
the allowed values of some keys (:data:`CHOICES`), the type of keys whose default is null
(:data:`NULLABLE`) and the ranges of numbers (``_CHECKS``).

A config has at most two levels: sections (``model``, ``data``, ``train``, ``eval``) holding
keys, and top-level keys (``device``, ``work_dir``). Merging goes key by key inside sections;
every other value, including the free-form mappings ``model.args``, ``train.loss`` and
``train.loss_args``, is replaced whole. A command-line override may still set one entry of a
free-form mapping (``model.args.base_channels=16``).

YAML is read with a ``yaml.SafeLoader`` subclass that only adds one rule: ``1e-3`` is a float
(YAML 1.1, which PyYAML follows, needs ``1.0e-3``). Nothing in a config can run code.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .io import write_text

__all__ = ["Config", "load_config", "DEFAULT_CONFIG_PATH", "CHOICES", "NULLABLE"]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

CHOICES: dict[str, tuple[str, ...]] = {
    "data.mode": ("patch", "resize"),
    "data.preprocess": ("none", "green_clahe"),
    "train.optimizer": ("adam", "adamw", "sgd"),
    "train.scheduler": ("poly", "cosine", "step", "constant"),
    "device": ("auto", "cpu", "cuda"),
}
"""Allowed values of the keys that take one of a fixed set of strings."""

NULLABLE: dict[str, type | tuple[type, ...]] = {
    "data.root": str,
    "model.ssl": str,
    "data.val_split": str,
    "data.test_split": str,
    "data.augment": (str, list),
    "train.epochs": int,
    "train.grad_clip": float,
    "eval.tile_size": int,
    "work_dir": str,
}
"""Keys that may be null, with the type of their other values. No other key may be null."""

_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    (str, list): "a preset name, a .yaml file or a list of ops",
    dict: "a mapping",
}
_SEED_MAX = 2**32 - 1  # numpy seeds are unsigned 32-bit


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-3``, ``2E5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Invalid(Exception):
    """A value breaks a rule; the message completes ``'<key>' ...``."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """A check that a number lies in ``[lo, hi]``; ``lo_open``/``hi_open`` exclude the bound."""
    if hi is None:
        rule = f"must be {'>' if lo_open else '>='} {lo}"
    else:
        rule = f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(value: float) -> float:
        too_low = value <= lo if lo_open else value < lo
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            raise _Invalid(f"{rule}, got {value!r}")
        return value

    return check


def _non_empty(value: str) -> str:
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _string_keys(value: dict) -> dict:
    for name in value:
        if not isinstance(name, str):
            raise _Invalid(f"must have string keys, got {name!r} ({type(name).__name__})")
    return value


def _loss_weights(value: dict) -> dict:
    if not value:
        raise _Invalid("must name at least one loss with its weight, e.g. {ce: 0.5, dice: 0.5}, got {}")
    _string_keys(value)
    for name, weight in value.items():
        if not _is_number(weight) or weight < 0:
            raise _Invalid(f"weights must be numbers >= 0, got {name!r}: {weight!r}")
    if not any(weight > 0 for weight in value.values()):
        raise _Invalid(f"must give at least one loss a weight > 0, got {value!r}")
    return {name: float(weight) for name, weight in value.items()}


def _weight_list(value: list) -> list:
    for weight in value:
        if not _is_number(weight) or weight < 0:
            raise _Invalid(f"must hold numbers >= 0, got {weight!r} in {value!r}")
    return [float(weight) for weight in value]


def _augment_ops(value: str | list) -> list:
    """Resolve a preset name or YAML file to its list of ops, so a saved config records the ops themselves.

    Problems raise ConfigError naming ``data.augment`` or the pipeline file (see jmedseg.augment).
    """
    from .augment import resolve_ops  # OpenCV is loaded only when a config sets augmentation

    return resolve_ops(value, source="data.augment")


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "model.name": _non_empty,
    "model.in_channels": _in_range(1),
    "model.num_classes": _in_range(1),
    "model.args": _string_keys,
    "data.name": _non_empty,
    "data.val_fraction": _in_range(0, 1, hi_open=True),
    "data.val_seed": _in_range(0, _SEED_MAX),
    "data.patch_size": _in_range(32),
    "data.image_size": _in_range(32),
    "data.foreground_bias": _in_range(0, 1),
    "data.augment": _augment_ops,
    "train.batch_size": _in_range(1),
    "train.iterations": _in_range(1),
    "train.epochs": _in_range(1),
    "train.lr": _in_range(0, lo_open=True),
    "train.weight_decay": _in_range(0),
    "train.momentum": _in_range(0, 1, hi_open=True),
    "train.warmup_iters": _in_range(0),
    "train.poly_power": _in_range(0, lo_open=True),
    "train.step_size": _in_range(1),
    "train.step_gamma": _in_range(0, lo_open=True),
    "train.min_lr": _in_range(0),
    "train.val_interval": _in_range(1),
    "train.log_interval": _in_range(1),
    "train.seed": _in_range(0, _SEED_MAX),
    "train.loss": _loss_weights,
    "train.loss_args": _string_keys,
    "train.aux_weights": _weight_list,
    "train.grad_clip": _in_range(0, lo_open=True),
    "train.checkpoint_interval": _in_range(1),
    "train.nan_retries": _in_range(0),
    "train.nan_lr_factor": _in_range(0, 1, lo_open=True, hi_open=True),
    "train.stn_penalty": _in_range(0),
    "model.stn_tolerance": _in_range(0),
    "train.ema_decay": _in_range(0, 1, hi_open=True),
    "eval.threshold": _in_range(0, 1),
    "eval.tile_size": _in_range(32),
    "eval.tile_overlap": _in_range(0, 1, hi_open=True),
}
"""Rules beyond the type, checked on non-null values; they may also convert (weights to float)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_yaml(path: Path) -> dict:
    """Read one YAML file whose top level is a mapping; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        tree = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: invalid YAML{where}: {_one_line(problem)}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (model, data, train, eval, ...), "
            f"got {type(tree).__name__}"
        )
    return tree


@lru_cache(maxsize=1)
def _schema() -> dict:
    """The default config, checked against the tables of this module."""
    path = DEFAULT_CONFIG_PATH
    defaults = _read_yaml(path)
    flat = {}
    for key, default in defaults.items():
        if isinstance(default, dict):
            flat.update({f"{key}.{name}": value for name, value in default.items()})
        else:
            flat[key] = default
    for key in (*CHOICES, *NULLABLE, *_CHECKS):
        if key not in flat:
            raise ConfigError(f"{path}: key {key!r} of jmedseg.config's tables is missing")
    for key, default in flat.items():
        if default is None and key not in NULLABLE:
            raise ConfigError(f"{path}: {key!r} defaults to null but jmedseg.config.NULLABLE has no type for it")
    return defaults


def _sections() -> list[str]:
    return [key for key, value in _schema().items() if isinstance(value, dict)]


def _merge(dst: dict, src: Mapping, origins: dict[str, str], origin_of: Callable[[str], str]) -> None:
    """Merge ``src`` over ``dst`` in place: sections key by key, other values replaced whole.

    ``origins`` maps each key set to where its value came from, ``origin_of(key)``.
    """
    sections = _sections()
    for key, value in src.items():
        if key in sections and value is None:
            continue  # "train:" with every key commented out changes nothing
        if key in sections and isinstance(value, dict):
            if not isinstance(dst.get(key), dict):
                dst[key] = {}
            for name, item in value.items():
                dotted = f"{key}.{name}"
                dst[key][name] = copy.deepcopy(item)
                origins[dotted] = origin_of(dotted)
        else:
            dst[key] = copy.deepcopy(value)
            origins[str(key)] = origin_of(str(key))


def _load_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    """Read a config and its ``_base_`` files (depth first, later wins), without the defaults."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved):], resolved))
        raise ConfigError(f"{path}: _base_ cycle: {cycle}")
    tree = _read_yaml(path)
    bases = tree.pop("_base_", None)
    if isinstance(bases, str):
        bases = [bases]
    elif bases is None:
        bases = []
    if not isinstance(bases, list) or not all(isinstance(base, str) and base for base in bases):
        raise ConfigError(f"{path}: '_base_' must be a path or a list of paths, got {bases!r}")

    merged: dict = {}
    origins: dict[str, str] = {}
    for base in bases:
        base_path = Path(os.path.normpath(path.parent / base))
        base_tree, base_origins = _load_file(base_path, (*chain, resolved))
        _merge(merged, base_tree, origins, lambda key: base_origins.get(key, str(base_path)))
    _merge(merged, tree, origins, lambda key: str(path))
    return merged, origins


def _apply_override(tree: dict, origins: dict[str, str], override: str) -> None:
    """Apply one ``"dotted.key=value"`` override in place; the value is read as YAML."""
    label = f"override {override!r}"
    key, sep, text = override.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts):
        raise ConfigError(f"{label}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-3")
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML value: {_one_line(getattr(exc, 'problem', None) or exc)}") from None

    if len(parts) == 1:
        _merge(tree, {key: value}, origins, lambda _: label)
        return
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{label}: {'.'.join(parts[:depth + 1])!r} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value
    leaf = ".".join(parts[:2]) if parts[0] in _sections() else parts[0]
    origins[leaf] = label


def _unknown_key(key: str, section: str | None) -> str:
    """'unknown key ...' with the closest valid key, or the list of valid keys."""
    schema = _schema()
    valid = list(schema[section]) if section else list(schema)
    # A key put in the wrong section (train.threshold) beats a look-alike in its own section.
    elsewhere = [f"{name}.{key}" for name in _sections() if name != section and key in schema[name]]
    close = difflib.get_close_matches(key, valid, n=1)
    if elsewhere:
        hint = f"did you mean {elsewhere[0]!r}?"
    elif close:
        hint = f"did you mean {(f'{section}.' if section else '') + close[0]!r}?"
    else:
        hint = f"valid keys{f' in {section!r}' if section else ''}: {', '.join(valid)}"
    dotted = f"{section}.{key}" if section else key
    return f"unknown key {dotted!r} ({hint})"


def _check_value(key: str, value: Any, default: Any) -> Any:
    """Check one value against its default's type and its rules; return it converted."""
    expected = NULLABLE.get(key, type(default))
    if value is None:
        if key in NULLABLE:
            return None
        raise _Invalid(f"must be {_TYPE_NAMES[expected]}, got null")
    if expected is float:
        valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        valid = isinstance(value, int) and not isinstance(value, bool)
    else:
        valid = isinstance(value, expected)
    if not valid:
        nullable = " or null" if key in NULLABLE else ""
        raise _Invalid(f"must be {_TYPE_NAMES[expected]}{nullable}, got {value!r} ({type(value).__name__})")
    if expected is float:
        if not math.isfinite(value):
            raise _Invalid(f"must be a finite number, got {value!r}")
        value = float(value)
    if key in CHOICES and value not in CHOICES[key]:
        raise _Invalid(f"must be one of {', '.join(map(repr, CHOICES[key]))}, got {value!r}")
    check = _CHECKS.get(key)
    return check(value) if check else value


def _validate(tree: dict, origins: dict[str, str], fallback: str) -> dict:
    """Check a merged tree against the schema and return the converted copy."""

    def fail(key: str, message: str) -> ConfigError:
        section = key.partition(".")[0]
        return ConfigError(f"{origins.get(key) or origins.get(section) or fallback}: {message}")

    schema = _schema()
    for key in tree:
        if not isinstance(key, str) or key not in schema:
            raise fail(str(key), _unknown_key(str(key), None))
    result: dict = {}
    for key, default in schema.items():
        value = tree.get(key, default)
        if not isinstance(default, dict):
            try:
                result[key] = _check_value(key, value, default)
            except _Invalid as exc:
                raise fail(key, f"{key!r} {exc}") from None
            continue
        if not isinstance(value, dict):
            raise fail(key, f"{key!r} must be a mapping of keys, got {value!r} ({type(value).__name__})")
        for name in value:
            if not isinstance(name, str) or name not in default:
                raise fail(f"{key}.{name}", _unknown_key(str(name), key))
        section = {}
        for name, item_default in default.items():
            dotted = f"{key}.{name}"
            try:
                section[name] = _check_value(dotted, value.get(name, item_default), item_default)
            except _Invalid as exc:
                raise fail(dotted, f"{dotted!r} {exc}") from None
        result[key] = section
    return result


def _build(tree: dict, origins: dict[str, str], overrides: Iterable[str], fallback: str) -> dict:
    """Merge ``tree`` over the defaults, apply the overrides and validate."""
    if isinstance(overrides, str):
        overrides = (overrides,)
    merged = copy.deepcopy(_schema())
    _merge(merged, tree, origins, lambda key: origins.get(key, fallback))
    for override in overrides:
        _apply_override(merged, origins, override)
    return _validate(merged, origins, fallback)


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> "Config":
    """Load, merge and validate a config.

    Args:
        path: YAML config file; ``None`` gives the defaults (``configs/default.yaml``).
        overrides: ``"section.key=value"`` strings applied in order after the file; values are
            read as YAML (``1e-3``, ``true``, ``null``, ``[0.4, 0.2]``, ``{base_channels: 16}``).

    Returns:
        The validated :class:`Config`; every key of the schema is present.

    Raises:
        ConfigError: the file is missing or not valid YAML, ``_base_`` files form a cycle, or a
            key is unknown or has a wrong value. The message names the file (or override) and key.
    """
    if path is None:
        return Config(_build({}, {}, overrides, str(DEFAULT_CONFIG_PATH)), source=None)
    tree, origins = _load_file(Path(path))
    return Config(_build(tree, origins, overrides, str(path)), source=str(path))


class Config(Mapping):
    """A validated config: read-only nested mapping with attribute access.

    ``cfg.train.lr``, ``cfg["train"]["lr"]`` and ``cfg.get("train.lr")`` give the same value.
    Sections and other mappings come back as ``Config`` (so ``**cfg.model.args`` works); lists
    come back as stored, so treat them as read-only and use :meth:`to_dict` for a copy to edit.

    Attributes:
        source: the config file this was loaded from, or ``None``.
    """

    def __init__(self, data: Mapping, source: str | None = None):
        self._data = data
        self.source = source

    @classmethod
    def from_dict(cls, data: Mapping, source: str | None = None) -> "Config":
        """Validate a (possibly partial) config mapping, e.g. one saved in a checkpoint.

        Missing keys take their defaults. ``source`` names the origin in error messages.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source or 'config'}: expected a mapping of sections, got {type(data).__name__}")
        tree = data.to_dict() if isinstance(data, Config) else dict(data)
        return cls(_build(tree, {}, (), source or "config"), source=source)

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return Config(value, self.source) if isinstance(value, dict) else value

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("_data")
        if data is None or name not in data:
            raise AttributeError(f"config has no key {name!r}")
        return self[name]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Config({self._data!r}, source={self.source!r})"

    def get(self, key: str, default: Any = None) -> Any:
        """Value at a dotted key such as ``"train.lr"``, or ``default`` when there is none."""
        node: Any = self
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def to_dict(self) -> dict:
        """A deep copy as plain nested dicts and lists."""
        return copy.deepcopy(self._data)

    def dump(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML, atomically (temporary file, then rename).

        Missing parent folders are created. ``load_config`` reads the file back to an equal config.
        """
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True)
        write_text(path, text)
