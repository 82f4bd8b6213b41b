"""Benchmark many models under one profile: train each, score it on the test split, measure its cost.

A *profile* is a YAML file (the shipped ones are ``configs/benchmark/<name>.yaml``) with these keys,
all optional:

==================  ==========================================================================
``description``     one line for the results README
``config``          base training config, relative to the profile file (default: ``configs/default.yaml``)
``overrides``       config keys set for every model, as sections: ``{train: {lr: 2e-3}}``
``dataset``         dataset folder name, found as ``--data``, ``$JMEDSEG_DATA/<name>`` or
                    ``../shared/data/<name>`` beside the repository; null: the config's ``data.root``
                    (null there too: the embedded synthetic dataset)
``models``          ``all`` (every registered model) or a list of names and shell patterns (``unet*``)
``exclude``         names or patterns removed from ``models``
``args``            ``tiny`` (each model's registered narrow arguments) or ``default`` (the builder's)
``model_args``      per-model arguments merged over those: ``{unet: {base_channels: 16}}``
``model_overrides`` per-model config keys, as sections: ``{u2net: {train: {batch_size: 4}}}``
``iterations``      training steps of every model (null: the config's ``train.iterations``)
``imports``         modules or ``.py`` files (relative to the profile) imported first, e.g. to
                    register models of your own
``timeout_min``     minutes after which a model's worker is killed (status ``timeout``); null: none
``timing_runs``     timed inference passes (median reported), after 2 warm-up passes; default 5
``flops_size``      side of the square input for GFLOPs and inference time; default 512
``grid_images``     test images shown in the prediction grid; default 2
==================  ==========================================================================

The base config's ``model.name`` and ``model.args`` are replaced per model. Every model trains in
its own worker process (``python -m jmedseg.benchmark SPEC.json``), so a crash, a memory peak or
the Jittor state of one model never touches another, and the peak memory is the model's own.

Run folder ``<work_dir>/<profile>/``: ``<model>.json`` per finished model (written atomically) and
``<model>/`` with the worker's training run (``config.yaml``, ``log.csv``, checkpoints),
``worker.log`` and ``predictions/``. A model whose JSON exists is skipped on the next run unless
its resolved config changed (then it is *stale* and runs again) or ``force`` is given, so an
interrupted benchmark resumes where it stopped.

Results folder ``<out_dir>/<profile>/``: ``results.csv``, ``README.md`` and ``dice_vs_gflops.png``,
rewritten after every model. The prediction grid ``predictions.png`` (image, ground truth and each
model's mask on the first ``grid_images`` test images) goes there only for the synthetic dataset:
licensed datasets (DRIVE, Kvasir-SEG) may not be redistributed, so for real data it stays in the
run folder. Figures are drawn with OpenCV.

Statuses: ``ok``; ``collapsed`` (trained, but predicts a single class everywhere on every test
image); ``nan`` (non-finite loss or predictions); ``failed`` (an exception, or the worker died; the
reason says which); ``timeout``.
"""
import csv
import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import yaml

from .cli import REPO_ROOT
from .config import DEFAULT_CONFIG_PATH, Config, _read_yaml, load_config
from .errors import ConfigError, DataError
from .io import atomic_write, write_json, write_text

__all__ = ["Profile", "PlannedModel", "PROFILE_DIR", "STATUSES", "load_profile", "list_profiles", "import_plugins",
           "resolve_data_root", "select_models", "model_args_for", "model_overrides_for", "model_config",
           "plan_benchmark", "run_benchmark", "run_worker", "write_results", "results_rows", "git_commit", "host_info",
           "draw_scatter", "draw_prediction_grid", "with_keys_added_since"]

PROFILE_DIR = REPO_ROOT / "configs" / "benchmark"
STATUSES = ("ok", "collapsed", "nan", "failed", "timeout")
INFER_WARMUP = 2

_PROFILE_DEFAULTS = {
    "description": "",
    "config": None,
    "overrides": {},
    "dataset": None,
    "models": "all",
    "exclude": [],
    "args": "tiny",
    "model_args": {},
    "model_overrides": {},
    "iterations": None,
    "imports": [],
    "timeout_min": None,
    "timing_runs": 5,
    "flops_size": 512,
    "grid_images": 2,
}
_ARG_CHOICES = ("tiny", "default")
_QUALITY_METRICS = ("dice", "iou", "precision", "recall", "specificity", "auc")
_DISTANCE_METRICS = ("hd95", "assd")
_SHORT_REASON = 300
_KILL_GRACE_S = 10


# ----------------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class Profile:
    """A validated benchmark profile (see the module docstring for the keys).

    Attributes:
        name: the file's stem, e.g. ``"smoke"``; names the run and results folders.
        path: the profile file.
        text: the file's text, quoted in the results README.
        config: the base training config file.
        models: the selected model names, in run order.
        imports: resolved ``imports`` (absolute ``.py`` paths or module names).
        timeout_s: worker time limit in seconds, or None.
    """

    name: str
    path: Path
    text: str
    description: str
    config: Path
    overrides: dict
    dataset: str | None
    models: tuple
    args: str
    model_args: dict
    model_overrides: dict
    iterations: int | None
    imports: tuple
    timeout_s: float | None
    timing_runs: int
    flops_size: int
    grid_images: int


def list_profiles():
    """Names of the profiles shipped in ``configs/benchmark/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _find_profile(name_or_path):
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = PROFILE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = list_profiles()
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"benchmark profile {str(name_or_path)!r} not found: not a file, and not a profile "
                      f"in {PROFILE_DIR} ({hint}available: {', '.join(names) or 'none'})")


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _string_list(path, key, value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{path}: {key!r} must be a list of non-empty strings, got {value!r}")
    return value


def _mapping(path, key, value):
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{path}: {key!r} must be a mapping with string keys, got {value!r}")
    return value


def _config_keys(path, key, tree):
    """Check a config tree given in a profile (``overrides``); it must not pick the model."""
    tree = _mapping(path, key, tree)
    model = tree.get("model")
    if isinstance(model, dict):
        for name in ("name", "args"):
            if name in model:
                raise ConfigError(f"{path}: {key}: 'model.{name}' is set per model by the benchmark; "
                                  f"use the profile keys 'models', 'args' and 'model_args' instead")
    return tree


def _unknown_model(path, key, name):
    from model_zoo import list_models

    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return ConfigError(f"{path}: {key}: unknown model {name!r}{hint}; see list_models()")


def _expand_models(path, key, patterns):
    """Registered names matching ``patterns`` (names or shell patterns), in the order given."""
    from model_zoo import list_models

    registered = list_models()
    names = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = fnmatch.filter(registered, pattern)
            if not matched:
                raise ConfigError(f"{path}: {key}: pattern {pattern!r} matches no registered model")
        elif pattern in registered:
            matched = [pattern]
        else:
            raise _unknown_model(path, key, pattern)
        names.extend(n for n in matched if n not in names)
    return names


def _import_entries(path, entries):
    """Resolve ``imports``: ``.py`` files relative to the profile become absolute paths."""
    resolved = []
    for entry in entries:
        if entry.endswith(".py"):
            file = (path.parent / entry).resolve()
            if not file.is_file():
                raise ConfigError(f"{path}: imports: file {entry!r} not found (looked at {file})")
            resolved.append(str(file))
        else:
            resolved.append(entry)
    return tuple(resolved)


def import_plugins(entries, source="imports"):
    """Import modules (dotted names) and ``.py`` files, each once per process, e.g. to register models."""
    for entry in entries:
        try:
            if entry.endswith(".py"):
                name = "jmedseg_plugin_" + hashlib.sha1(entry.encode()).hexdigest()[:12]
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, entry)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            else:
                importlib.import_module(entry)
        except Exception as err:
            raise ConfigError(f"{source}: cannot import {entry!r}: {_one_line_error(err)}") from None


def load_profile(name_or_path):
    """Read and validate a profile: a shipped name (``"smoke"``) or a YAML file path.

    Model names, ``model_args`` arguments and every model's resolved config are checked here, so
    a typo fails before any training. ``imports`` are imported (their models may be listed).

    Raises:
        ConfigError: one line naming the profile file and the key, with the closest valid key
            or model name for a misspelt one.
    """
    from model_zoo import model_arguments

    path = _find_profile(name_or_path)
    tree = _read_yaml(path)
    for key in tree:
        if key not in _PROFILE_DEFAULTS:
            close = difflib.get_close_matches(str(key), _PROFILE_DEFAULTS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(_PROFILE_DEFAULTS)}"
            raise ConfigError(f"{path}: unknown key {key!r} ({hint})")
    p = {**_PROFILE_DEFAULTS, **tree}

    if not isinstance(p["description"], str):
        raise ConfigError(f"{path}: 'description' must be a string, got {p['description']!r}")
    if p["config"] is None:
        config = DEFAULT_CONFIG_PATH
    elif isinstance(p["config"], str) and p["config"].strip():
        config = Path(os.path.normpath(path.parent / p["config"]))
        if not config.is_file():
            raise ConfigError(f"{path}: 'config': file {p['config']!r} not found (looked at {config})")
    else:
        raise ConfigError(f"{path}: 'config' must be a path to a training config, got {p['config']!r}")
    if p["dataset"] is not None and not (isinstance(p["dataset"], str) and p["dataset"].strip()):
        raise ConfigError(f"{path}: 'dataset' must be a dataset folder name or null, got {p['dataset']!r}")
    if p["args"] not in _ARG_CHOICES:
        raise ConfigError(f"{path}: 'args' must be one of {', '.join(map(repr, _ARG_CHOICES))}, got {p['args']!r}")
    if p["iterations"] is not None and not _is_int(p["iterations"], 1):
        raise ConfigError(f"{path}: 'iterations' must be an integer >= 1 or null, got {p['iterations']!r}")
    timeout = p["timeout_min"]
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError(f"{path}: 'timeout_min' must be a number > 0 or null, got {timeout!r}")
    for key, minimum in (("timing_runs", 1), ("flops_size", 32), ("grid_images", 0)):
        if not _is_int(p[key], minimum):
            raise ConfigError(f"{path}: {key!r} must be an integer >= {minimum}, got {p[key]!r}")

    imports = _import_entries(path, _string_list(path, "imports", p["imports"]))
    import_plugins(imports, source=str(path))
    if p["models"] == "all":
        patterns = ["*"]
    elif isinstance(p["models"], list) and p["models"]:
        patterns = _string_list(path, "models", p["models"])
    else:
        raise ConfigError(f"{path}: 'models' must be 'all' or a non-empty list of model names, got {p['models']!r}")
    excluded = set(_expand_models(path, "exclude", _string_list(path, "exclude", p["exclude"])))
    models = tuple(n for n in _expand_models(path, "models", patterns) if n not in excluded)
    if not models:
        raise ConfigError(f"{path}: no model left to benchmark after 'exclude'")

    model_args = _mapping(path, "model_args", p["model_args"])
    for name, args in model_args.items():
        _check_member(path, "model_args", name, models)
        args = _mapping(path, f"model_args.{name}", args)
        accepted = model_arguments(name)
        for arg in args:
            if arg not in accepted:
                close = difflib.get_close_matches(arg, accepted, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{path}: model_args.{name}: unknown argument {arg!r} "
                                  f"({hint}accepted: {', '.join(sorted(accepted))})")
    model_overrides = _mapping(path, "model_overrides", p["model_overrides"])
    for name, tree in model_overrides.items():
        _check_member(path, "model_overrides", name, models)
        _config_keys(path, f"model_overrides.{name}", tree)

    profile = Profile(
        name=path.stem, path=path, text=path.read_text(encoding="utf-8"), description=p["description"].strip(),
        config=config, overrides=_config_keys(path, "overrides", p["overrides"]), dataset=p["dataset"],
        models=models, args=p["args"], model_args=model_args, model_overrides=model_overrides,
        iterations=p["iterations"], imports=imports,
        timeout_s=None if timeout is None else float(timeout) * 60.0, timing_runs=p["timing_runs"],
        flops_size=p["flops_size"], grid_images=p["grid_images"])
    for name in models:
        model_config(profile, name)
    return profile


def _check_member(path, key, name, models):
    """``name`` (a key of ``model_args``/``model_overrides``) must be one of the profile's models."""
    from model_zoo import list_models

    if name not in list_models():
        raise _unknown_model(path, key, name)
    if name not in models:
        raise ConfigError(f"{path}: {key}: {name!r} is not among the profile's models (see 'models', 'exclude')")


def _as_overrides(tree):
    """A config tree as ``load_config`` overrides: ``{"train": {"lr": 0.002}}`` -> ``["train.lr=0.002"]``.

    Values are written as JSON, which YAML reads back unchanged.
    """
    overrides = []
    for key, value in tree.items():
        if isinstance(value, dict) and value and "." not in key:
            overrides.extend(f"{key}.{name}={json.dumps(item)}" for name, item in value.items())
        else:
            overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def model_args_for(profile, name):
    """The keyword arguments ``name`` is built with under ``profile``."""
    from model_zoo import tiny_args

    args = tiny_args(name) if profile.args == "tiny" else {}
    args.update(profile.model_args.get(name, {}))
    return args


def model_overrides_for(profile, name):
    """``profile``'s per-model config keys for ``name`` as ``load_config`` overrides (``[]`` if none)."""
    return _as_overrides(profile.model_overrides.get(name, {}))


def model_config(profile, name, data_root=None):
    """The resolved training config of model ``name`` under ``profile``.

    Order: the base config, ``overrides``, the model's name and arguments, ``iterations``,
    ``data_root`` (when given), then ``model_overrides[name]``.
    """
    overrides = _as_overrides(profile.overrides)
    overrides += [f"model.name={json.dumps(name)}", f"model.args={json.dumps(model_args_for(profile, name))}"]
    if profile.iterations is not None:
        overrides += [f"train.iterations={profile.iterations}", "train.epochs=null"]
    if data_root is not None:
        overrides.append(f"data.root={json.dumps(str(data_root))}")
    overrides += model_overrides_for(profile, name)
    try:
        return load_config(profile.config, overrides)
    except ConfigError as err:
        raise ConfigError(f"{profile.path}: model {name!r}: {err}") from None


def resolve_data_root(profile, data=None):
    """The dataset folder: ``data`` if given, else the profile's ``dataset`` looked up; None: the config's."""
    if data is not None:
        root = Path(data).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"{root}: dataset folder not found (--data)")
        return root
    if profile.dataset is None:
        return None
    candidates = []
    if os.environ.get("JMEDSEG_DATA"):
        candidates.append(Path(os.environ["JMEDSEG_DATA"]).expanduser() / profile.dataset)
    candidates.append(REPO_ROOT.parent / "shared" / "data" / profile.dataset)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(f"{profile.path}: dataset {profile.dataset!r} not found at "
                    f"{' or '.join(str(c) for c in candidates)}; pass --data or set JMEDSEG_DATA "
                    f"to the folder holding {profile.dataset}/")


# ----------------------------------------------------------------------------------- planning
@dataclass
class PlannedModel:
    """One model of a benchmark run.

    Attributes:
        state: ``pending`` (no result), ``done`` (a result with status ok), ``failed`` (a result
            with another status), ``stale`` (a result for a different config) or ``unreadable``.
        run: whether this invocation trains it.
    """

    name: str
    config: Config
    fingerprint: str
    record: dict | None
    state: str
    run: bool


def _fingerprint(config, profile):
    """Hash of everything that decides a model's result: its config (a dict) and the measurement settings."""
    key = {"config": config, "timing_runs": profile.timing_runs, "flops_size": profile.flops_size,
           "grid_images": profile.grid_images}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def with_keys_added_since(old, new, defaults):
    """``old`` (a result's config) plus the ``section.key`` entries it lacks that ``new`` leaves at their default.

    A key added to the config schema after a result was made defaults to the behaviour that existed
    before it, so the result still holds for a config that leaves the new key at its default.
    """
    merged = {name: dict(value) if isinstance(value, dict) else value for name, value in old.items()}
    for name, section in new.items():
        if isinstance(section, dict) and isinstance(merged.get(name), dict):
            for key, value in section.items():
                if key not in merged[name] and key in defaults.get(name, {}) and value == defaults[name][key]:
                    merged[name][key] = value
    return merged


def _is_current(record, config, defaults, profile):
    """Whether ``record`` was made with ``config`` (up to keys added since, at their default) and these settings."""
    made_with = record.get("config")
    if not isinstance(made_with, dict) or record.get("fingerprint") != _fingerprint(made_with, profile):
        return False
    return with_keys_added_since(made_with, config, defaults) == config


def _read_record(path):
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "pending"
    except (OSError, ValueError):
        return None, "unreadable"
    if not isinstance(record, dict) or "status" not in record:
        return None, "unreadable"
    return record, "done" if record["status"] == "ok" else "failed"


def select_models(profile, models=None):
    """``models`` (names, or None for all) checked against the profile's models, in profile order if None."""
    if not models:
        return list(profile.models)
    chosen = []
    for name in models:
        if name not in profile.models:
            close = difflib.get_close_matches(name, profile.models, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"--models: {name!r} is not a model of profile {profile.name!r} "
                              f"({hint}its models: {', '.join(profile.models)})")
        if name not in chosen:
            chosen.append(name)
    return chosen


def plan_benchmark(profile, data_root, run_dir, models=None, force=False, retry_failed=False):
    """Every model of the profile with its config, its existing result and whether it runs now.

    Only the models in ``models`` (default: all) run; the others are listed for the tables.
    """
    selected = set(select_models(profile, models))
    plan = []
    defaults = load_config().to_dict()
    for name in profile.models:
        cfg = model_config(profile, name, data_root)
        config = cfg.to_dict()
        fingerprint = _fingerprint(config, profile)
        record, state = _read_record(Path(run_dir) / f"{name}.json")
        if record is not None and not _is_current(record, config, defaults, profile):
            state = "stale"
        run = name in selected and (force or state in ("pending", "stale", "unreadable")
                                    or (retry_failed and state == "failed"))
        plan.append(PlannedModel(name, cfg, fingerprint, record, state, run))
    return plan


# ----------------------------------------------------------------------------------- worker
def _one_line_error(err):
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= _SHORT_REASON else text[:_SHORT_REASON - 1] + "…"


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _NonFinitePredictions(Exception):
    """The trained model predicts NaN or infinite probabilities."""


def _train_images_per_s(log_rows):
    """Median images/s over the logging windows after the first (which compiles Jittor's kernels)."""
    rates = [row["images_per_s"] for row in log_rows]
    steady = rates[1:] if len(rates) > 1 else rates
    return float(np.median(steady)) if steady else None


def _score(model, dataset, cfg, grid_names, prediction_dir, relative_to):
    """Evaluate on ``dataset`` as the trainer does; also record each prediction's class balance.

    The predictions of ``grid_names`` are saved as label PNGs in ``prediction_dir``; ``grid`` maps
    each of those image names to its file, relative to ``relative_to``.
    """
    from .engine import labels_from_probs, predict_probs
    from .metrics import SegmentationEvaluator

    m, e = cfg.model, cfg.eval
    binary = m.num_classes <= 2
    evaluator = SegmentationEvaluator(num_classes=max(2, m.num_classes), threshold=e.threshold,
                                      compute_distances=e.distances)
    fractions, constant, grid = [], [], {}
    for sample in dataset:
        probs = predict_probs(model, sample.image, tile_size=e.tile_size, overlap=e.tile_overlap, tta=e.tta)
        if not np.isfinite(probs).all():
            raise _NonFinitePredictions(f"non-finite probabilities on test image {sample.name!r}")
        fov = sample.fov if e.use_fov else None
        evaluator.add(probs[-1] if binary else probs, sample.mask, fov=fov, name=sample.name)
        labels = labels_from_probs(probs, e.threshold)
        region = labels[fov] if fov is not None else labels.ravel()
        fractions.append(float(np.mean(region > 0)) if region.size else 0.0)
        constant.append(bool(np.unique(region).size <= 1))
        if sample.name in grid_names:
            file = prediction_dir / f"{len(grid):02d}.png"
            with atomic_write(file) as f:
                f.write(cv2.imencode(".png", labels.astype(np.uint8))[1].tobytes())
            grid[sample.name] = str(file.relative_to(relative_to))
    summary = evaluator.summary()
    return {"metrics": summary, "foreground_fraction": fractions, "constant_prediction": constant, "grid": grid}


def _collapse_reason(fractions, constant):
    """Why a model counts as collapsed, or None when its predictions vary."""
    if not constant or not all(constant):
        return None
    n = len(fractions)
    if all(f == 0.0 for f in fractions):
        return f"predicts background everywhere on all {n} test images"
    if all(f == 1.0 for f in fractions):
        return f"predicts foreground everywhere on all {n} test images"
    return f"predicts a single class everywhere on each of the {n} test images"


def _inference_ms(model, shape, runs):
    """Median milliseconds of one eval-mode forward pass on a ``shape`` input, after warm-up passes."""
    from model_zoo.backend import jt

    model.eval()
    x = jt.array(np.random.RandomState(0).standard_normal(shape).astype(np.float32))
    times = []
    with jt.no_grad():
        for _ in range(INFER_WARMUP + runs):
            jt.sync_all()
            start = time.perf_counter()
            out = model(x)
            (out[0] if isinstance(out, (list, tuple)) else out).sync()
            jt.sync_all()
            times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times[INFER_WARMUP:]))


def run_worker(spec):
    """Train, score and time one model; returns its record. Errors of the model become its status.

    Args:
        spec: ``model``, ``config`` (resolved config dict), ``work_dir`` (its training run folder),
            ``imports``, ``timing_runs``, ``flops_size`` and ``grid_images``.

    Returns:
        ``status``/``reason`` and whatever was measured before a failure: ``params``, ``train_s``,
        ``train_images_per_s``, ``final_loss``, ``metrics`` (the evaluator's summary),
        ``foreground_fraction`` per test image, ``grid`` (test image -> prediction PNG relative to
        the run folder), ``gflops``, ``infer_ms``, ``cpu_s`` (CPU time of this process, compiling
        kernels included), ``peak_rss_mib`` (process high-water mark) and
        ``rss_ready_mib`` (the same, once Jittor, the data and the model are loaded: before training).
    """
    from model_zoo import count_flops, count_parameters
    from model_zoo.backend import jt, report

    from .checkpoint import load_checkpoint
    from .engine import Trainer

    work_dir = Path(spec["work_dir"])
    record = {"status": "ok", "reason": None, "jittor": jt.__version__}
    try:
        import_plugins(spec.get("imports", ()))
        cfg = Config.from_dict(spec["config"], source=f"benchmark config of {spec['model']}")
        trainer = Trainer(cfg, work_dir, progress=False)
        test = trainer.datasets.get("test")
        if not test:
            raise DataError(f"{cfg.data.root or 'synthetic dataset'}: no test split "
                            f"{cfg.data.test_split!r} to score the model on")
        record.update(rss_ready_mib=_peak_rss_mib(), device=trainer.device, onednn=report()["onednn"],
                      params=count_parameters(trainer.model))
        start = time.perf_counter()
        trainer.train()
        record.update(train_s=time.perf_counter() - start, iterations=trainer.step,
                      train_images_per_s=_train_images_per_s(trainer.log_rows),
                      final_loss=trainer.log_rows[-1]["loss"] if trainer.log_rows else None)
        model, _ = load_checkpoint(work_dir / "best.npz")
        record.update(_score(model, test, cfg, set(test.names[:spec["grid_images"]]), work_dir / "predictions",
                             work_dir.parent))
        reason = _collapse_reason(record["foreground_fraction"], record.pop("constant_prediction"))
        if reason:
            record.update(status="collapsed", reason=reason)
        shape = (1, cfg.model.in_channels, spec["flops_size"], spec["flops_size"])
        record["gflops"] = count_flops(model, shape) / 1e9
        record["infer_ms"] = _inference_ms(model, shape, spec["timing_runs"])
    except (FloatingPointError, _NonFinitePredictions) as err:
        record.update(status="nan", reason=" ".join(str(err).split()))
    except Exception as err:  # any failure of this model is its result; the benchmark goes on
        traceback.print_exc()
        record.update(status="failed", reason=_one_line_error(err))
    record.update(peak_rss_mib=_peak_rss_mib(), cpu_s=_cpu_s())
    return record


def _worker_main(argv):
    """``python -m jmedseg.benchmark SPEC.json``: run one model, write ``SPEC.json``'s ``result`` path."""
    if len(argv) != 1:
        print("usage: python -m jmedseg.benchmark SPEC.json (started by jmedseg.benchmark.run_benchmark)",
              file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    print(f"benchmark worker: {spec['model']} in {spec['work_dir']}", flush=True)
    record = run_worker(spec)
    write_json(spec["result"], record)
    print(f"benchmark worker: {spec['model']} finished with status {record['status']}", flush=True)
    return 0


def _last_line(path):
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def _run_in_worker(spec, model_dir, timeout_s):
    """Run ``spec`` in a fresh Python process; returns the worker's record (a failure if it died)."""
    spec_path, result_path, log_path = model_dir / "spec.json", model_dir / "result.json", model_dir / "worker.log"
    write_json(spec_path, dict(spec, result=str(result_path)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jmedseg.benchmark", str(spec_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=_KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return {"status": "timeout", "reason": f"no result after {timeout_s / 60:.3g} min (timeout_min); "
                                                   f"the worker was killed"}
        except BaseException:  # Ctrl-C: stop the worker too before passing the interrupt on
            proc.kill()
            proc.wait()
            raise
    if result_path.is_file():  # written last and atomically: the worker got through its model
        return json.loads(result_path.read_text(encoding="utf-8"))
    how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"status {code}"
    last = _last_line(log_path)
    return {"status": "failed", "reason": f"worker process exited with {how}" + (f": {last}" if last else "")
            + f" (log: {log_path})"}


# ----------------------------------------------------------------------------------- environment
def git_commit(repo=REPO_ROOT, ignore=()):
    """``git rev-parse HEAD`` of ``repo`` with ``-dirty`` when the tree has changes; ``unknown`` without git.

    Changes to the files or under the folders ``ignore`` do not count: the results a tool writes,
    tracked in git and rewritten by the run being labelled (or by the interrupted run it resumes).
    """
    repo = Path(repo).resolve()
    excluded = [f":(exclude){Path(folder).resolve().relative_to(repo).as_posix()}" for folder in ignore
                if Path(folder).resolve().is_relative_to(repo)]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                                cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def host_info():
    """CPU model, core counts and RAM of this machine, with the Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "ram_gib": ram_gib,
            "python": platform.python_version()}


def _utc_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ----------------------------------------------------------------------------------- running
def _take_signals():
    """Undo Jittor's SIGINT handler in this (parent) process.

    It exits at once, so Ctrl-C could not stop the running worker first; Python's KeyboardInterrupt
    is what the worker loop expects. (Jittor's SIGCHLD handler, which would end the benchmark when a
    worker is killed at its time limit, is undone for every process by :mod:`model_zoo.backend`.)
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_benchmark(profile, data=None, models=None, work_dir="work_dirs/benchmark", out_dir="results",
                  force=False, retry_failed=False, command=None, log=print):
    """Train, score and time every selected model of ``profile``, then write the results.

    Args:
        profile: a :class:`Profile` or a profile name/path for :func:`load_profile`.
        data: dataset folder overriding the profile's ``dataset``.
        models: names to run (default: all of the profile's); the tables show every model of the
            profile that has a current result.
        work_dir, out_dir: parents of the run folder and the results folder (``<dir>/<profile>``).
        force: rerun models that already have a result.
        retry_failed: rerun models whose result is not ``ok``.
        command: the command line, quoted in the README.
        log: called with one line of progress at a time.

    Returns:
        dict with ``records`` (model -> record, every current result), ``ran`` and ``skipped``
        (selected models run now, and those that already had a result), ``run_dir`` and ``out_dir``.
    """
    from model_zoo import backend

    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    data_root = resolve_data_root(profile, data)
    _take_signals()
    run_dir = Path(work_dir) / profile.name
    results_dir = Path(out_dir) / profile.name
    plan = plan_benchmark(profile, data_root, run_dir, models, force, retry_failed)
    _check_test_split(plan[0].config)
    # Workers inherit the environment this process set up for oneDNN and report it as "set by
    # user"; this process knows how it was set up.
    host = dict(host_info(), commit=git_commit(ignore=[results_dir]), onednn=backend.onednn_status)
    selected = select_models(profile, models)
    todo = [p for p in plan if p.run]
    log(f"benchmark {profile.name!r}: {len(selected)} of its {len(plan)} models selected, {len(todo)} to run, "
        f"{len(selected) - len(todo)} with a result already; run folder {run_dir}")
    for item in plan:
        if item.state == "stale" and item.run:
            log(f"  {item.name}: its config or measurement settings changed since its result; running it again")
    finished_s = []
    for index, item in enumerate(todo, 1):
        model_dir = run_dir / item.name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        model_dir.mkdir(parents=True)
        log(f"[{index}/{len(todo)}] {item.name}: training {item.config.train.iterations} steps "
            f"(log: {model_dir / 'worker.log'})")
        spec = {"model": item.name, "config": item.config.to_dict(), "work_dir": str(model_dir.resolve()),
                "imports": list(profile.imports), "timing_runs": profile.timing_runs,
                "flops_size": profile.flops_size, "grid_images": profile.grid_images}
        start = time.perf_counter()
        result = _run_in_worker(spec, model_dir, profile.timeout_s)
        wall_s = time.perf_counter() - start
        record = {"model": item.name, "status": result.pop("status"), "reason": result.pop("reason", None),
                  "profile": profile.name, "args": dict(item.config.model.args), **result, "wall_s": wall_s,
                  "fingerprint": item.fingerprint, "finished": _utc_now(), "command": command, "host": host,
                  "config": item.config.to_dict()}
        write_json(run_dir / f"{item.name}.json", record)
        item.record, item.state = record, "done" if record["status"] == "ok" else "failed"
        finished_s.append(wall_s)
        left = len(todo) - index
        eta = f"; about {np.mean(finished_s) * left / 60:.0f} min left" if left else ""
        log(f"[{index}/{len(todo)}] {item.name}: {_status_line(record)} in {wall_s:.0f} s{eta}")
        write_results(profile, plan, run_dir, results_dir, data_root, command, data is not None)
    if not todo:
        write_results(profile, plan, run_dir, results_dir, data_root, command, data is not None)
    records = {p.name: p.record for p in plan if p.record is not None and p.state != "stale"}
    skipped = [p.name for p in plan if p.name in selected and not p.run]
    return {"records": records, "ran": [p.name for p in todo], "skipped": skipped,
            "run_dir": run_dir, "out_dir": results_dir}


def _status_line(record):
    if record["status"] in ("ok", "collapsed"):
        dice = record.get("metrics", {}).get("pooled", {}).get("dice")
        text = f"{record['status']}, test Dice {dice:.4f}" if dice is not None else record["status"]
        return text + (f" ({record['reason']})" if record["reason"] else "")
    return f"{record['status']}: {record['reason']}"


def _check_test_split(cfg):
    if cfg.data.root is None:
        return
    split = cfg.data.test_split
    if split is None or not (Path(cfg.data.root) / split / "images").is_dir():
        raise DataError(f"{cfg.data.root}: no test split {split!r} (with images/) to score the models on")


# ----------------------------------------------------------------------------------- tables
def _pooled(record, metric):
    return (record.get("metrics") or {}).get("pooled", {}).get(metric)


def _mean(record, metric):
    return (record.get("metrics") or {}).get("mean", {}).get(metric)


def _ranked(plan):
    """Current records: scored models by pooled Dice (best first), then the others by name."""
    records = [p.record for p in plan if p.record is not None and p.state != "stale"]
    scored = sorted((r for r in records if _pooled(r, "dice") is not None),
                    key=lambda r: (-_pooled(r, "dice"), r["model"]))
    unscored = sorted((r for r in records if _pooled(r, "dice") is None), key=lambda r: r["model"])
    return scored, unscored


def _csv_value(value):
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return "" if value is None else value


def results_rows(scored, unscored):
    """One flat dict per model for ``results.csv`` (rank only for scored models)."""
    rows = []
    for rank, record in [(i, r) for i, r in enumerate(scored, 1)] + [(None, r) for r in unscored]:
        row = {"rank": rank, "model": record["model"], "status": record["status"]}
        row.update({f"pooled_{m}": _pooled(record, m) for m in _QUALITY_METRICS})
        row.update({f"mean_{m}": _mean(record, m) for m in _QUALITY_METRICS + _DISTANCE_METRICS})
        row.update(params=record.get("params"), gflops=record.get("gflops"),
                   train_images_per_s=record.get("train_images_per_s"), infer_ms=record.get("infer_ms"),
                   peak_rss_mib=record.get("peak_rss_mib"), train_s=record.get("train_s"),
                   wall_s=record.get("wall_s"), cpu_s=record.get("cpu_s"), iterations=record.get("iterations"),
                   args=json.dumps(record.get("args", {}), sort_keys=True), reason=record.get("reason") or "")
        rows.append({k: _csv_value(v) for k, v in row.items()})
    return rows


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _md_table(header, rows, left=2):
    """A Markdown table; the first ``left`` columns are left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _rel(path):
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _unique(values):
    return list(dict.fromkeys(v for v in values if v is not None))


def _readme(profile, plan, scored, unscored, data_root, command, grid_note, data_given):
    records = scored + unscored
    lines = [f"# Benchmark `{profile.name}`", ""]
    if profile.description:
        lines += [profile.description, ""]
    first = plan[0].config
    data = str(data_root) if data_root else (first.data.root or "the embedded synthetic dataset")
    tests = _unique(r.get("metrics", {}).get("num_images") for r in scored)
    lines += [f"Each model was trained with the profile below and scored on the `{first.data.test_split}` "
              f"split of {first.data.name} ({data}; {', '.join(map(str, tests)) or '?'} images). "
              "Rows are sorted by pooled test Dice.", ""]
    lines += ["## Quality", "",
              "*Pooled*: confusion counts summed over all test pixels (inside the field of view when "
              "the dataset has one), each metric computed once. *mean*: mean of the per-image values. "
              "HD95 and ASSD are per-image means in pixels (images where exactly one of prediction and "
              "ground truth is empty are left out). Foreground class only; threshold "
              f"{first.eval.threshold}.", ""]
    header = ["#", "model", "Dice", "IoU", "precision", "recall", "specificity", "AUC",
              "mean Dice", "mean IoU", "HD95", "ASSD"]
    rows = []
    for rank, r in enumerate(scored, 1):
        name = f"`{r['model']}`" + (f" ({r['status']})" if r["status"] != "ok" else "")
        rows.append([rank, name] + [_fmt(_pooled(r, m), ".4f") for m in _QUALITY_METRICS]
                    + [_fmt(_mean(r, "dice"), ".4f"), _fmt(_mean(r, "iou"), ".4f"),
                       _fmt(_mean(r, "hd95"), ".2f"), _fmt(_mean(r, "assd"), ".2f")])
    lines += [_md_table(header, rows) if rows else "No model has been scored yet.", ""]
    size = profile.flops_size
    lines += ["## Cost", "",
              f"Parameters (BatchNorm statistics excluded); GFLOPs of one forward pass at 1×C×{size}×{size} "
              "(2 × multiply-adds of convolutions and linear layers); training images/s (median over the "
              "logging windows after the first, which compiles Jittor's kernels); inference ms for one "
              f"{size}×{size} image (median of {profile.timing_runs} passes after {INFER_WARMUP} warm-up "
              "passes, synchronised); peak RSS of the model's own worker process, which includes Jittor's "
              "runtime, the training data and the weights (together: the RSS before training); wall time of "
              "the worker (training, test, timing) and its CPU time (compiling Jittor's kernels "
              "included).", ""]
    header = ["model", "args", "steps", "params", "GFLOPs", "train img/s", "infer ms",
              "peak RSS (MiB)", "RSS before training (MiB)", "train s", "wall s", "CPU s"]
    rows = [[f"`{r['model']}`", f"`{json.dumps(r.get('args', {}), sort_keys=True)}`", _fmt(r.get("iterations"), "d"),
             _fmt(r.get("params"), ","), _fmt(r.get("gflops"), ".3g"),
             _fmt(r.get("train_images_per_s"), ".1f"), _fmt(r.get("infer_ms"), ".1f"),
             _fmt(r.get("peak_rss_mib"), ".0f"), _fmt(r.get("rss_ready_mib"), ".0f"),
             _fmt(r.get("train_s"), ".0f"), _fmt(r.get("wall_s"), ".0f"), _fmt(r.get("cpu_s"), ".0f")]
            for r in records]
    lines += [_md_table(header, rows) if rows else "No model has finished yet.", ""]
    problems = [r for r in records if r["status"] != "ok"]
    if problems:
        rows = [[f"`{r['model']}`", r["status"], r["reason"]] for r in problems]
        lines += ["## Failures", "", _md_table(["model", "status", "reason"], rows, left=3), ""]
    missing = [p for p in plan if p.record is None or p.state == "stale"]
    if missing:
        lines += ["## Not in the tables", "",
                  "No current result (not run yet, or run with another config): "
                  + ", ".join(f"`{p.name}`" for p in missing) + ".", ""]
    lines += ["## Figures", "", "![test Dice against GFLOPs](dice_vs_gflops.png)", "", grid_note, ""]

    commits = _unique(r.get("host", {}).get("commit") for r in records)
    hosts = _unique(json.dumps({k: v for k, v in r["host"].items() if k not in ("commit", "onednn")}, sort_keys=True)
                    for r in records if r.get("host"))
    devices = _unique(f"{r['device']} (oneDNN {r.get('host', {}).get('onednn', r.get('onednn'))})"
                      for r in records if r.get("device"))
    dates = sorted(_unique(r.get("finished") for r in records))
    reproduce = ["python", "tools/benchmark_all.py", "--profile",
                 profile.name if profile.path.parent == PROFILE_DIR else _rel(profile.path)]
    if data_root is not None and (data_given or profile.dataset is None):
        reproduce += ["--data", str(data_root)]
    lines += ["## Run", "",
              f"- Command (reproduces the tables): `{shlex.join(reproduce)}`"]
    if command:
        lines.append(f"- Last invocation: `{command}`")
    lines += [f"- Commit: {', '.join(f'`{c}`' for c in commits) or 'unknown'}"
              + (" (results from several commits)" if len(commits) > 1 else "")]
    for text in hosts:
        h = json.loads(text)
        lines.append(f"- Hardware: {h.get('cpu')}, {h.get('usable_cores')} usable of {h.get('cores')} cores, "
                     f"{h.get('ram_gib')} GiB RAM; Python {h.get('python')}")
    jittor = _unique(r.get("jittor") for r in records)
    lines += [f"- Jittor: {', '.join(jittor) or 'unknown'}; device: {'; '.join(devices) or 'unknown'}",
              f"- Date: {dates[0] if dates else 'unknown'}" + (f" to {dates[-1]}" if len(dates) > 1 else ""),
              "", f"## Profile `{_rel(profile.path)}`", "", "```yaml", profile.text.rstrip(), "```", "",
              f"Resolved training config of `{plan[0].name}` (the others differ in `model.name`, "
              "`model.args` and their `model_overrides`):", "", "```yaml",
              yaml.safe_dump(first.to_dict(), sort_keys=False, default_flow_style=None).rstrip(), "```", ""]
    return "\n".join(lines)


def write_results(profile, plan, run_dir, results_dir, data_root, command=None, data_given=False):
    """Write ``results.csv``, ``README.md`` and the figures from the current records of ``plan``.

    ``data_given``: the dataset folder was given on the command line (the README's command repeats it).
    """
    scored, unscored = _ranked(plan)
    rows = results_rows(scored, unscored)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    results_dir = Path(results_dir)
    write_text(results_dir / "results.csv", buf.getvalue())
    points = [(r["model"], r["gflops"], _pooled(r, "dice"), r["status"] == "ok") for r in scored
              if r.get("gflops")]
    _write_png(results_dir / "dice_vs_gflops.png",
               draw_scatter(points, title=f"benchmark {profile.name}: test Dice vs compute",
                            xlabel=f"GFLOPs at {profile.flops_size}x{profile.flops_size} (log scale)",
                            ylabel="pooled test Dice"))
    synthetic = plan[0].config.data.root is None
    grid_path = (results_dir if synthetic else Path(run_dir)) / "predictions.png"
    grid = _prediction_grid(plan[0].config, scored, Path(run_dir))
    if grid is not None:
        _write_png(grid_path, grid)
        note = ("![predictions](predictions.png)" if synthetic else
                f"The prediction grid is in the run folder (`{_rel(grid_path)}`), not here: the dataset's "
                "licence forbids redistributing its images.")
    else:
        note = "No prediction grid (no scored model, or `grid_images: 0`)."
    readme = _readme(profile, plan, scored, unscored, data_root, command, note, data_given)
    write_text(results_dir / "README.md", readme)


def _write_png(path, image):
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode the figure")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())


# ----------------------------------------------------------------------------------- figures
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (40, 40, 40)
_GRID = (225, 225, 225)
_MINOR_INK = (110, 110, 110)
_OK_COLOUR = (180, 100, 30)       # BGR blue
_BAD_COLOUR = (40, 40, 210)       # BGR red
_TP, _FP, _FN = (255, 255, 255), (60, 60, 230), (230, 150, 40)   # BGR: white, red, blue
_OUTSIDE = (70, 70, 70)


def _put(img, text, org, scale=0.45, colour=_INK, thickness=1):
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, colour, thickness, cv2.LINE_AA)


def _text_wh(text, scale=0.45, thickness=1):
    (w, h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    return w, h + baseline


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_scatter(points, title, xlabel, ylabel, size=(1000, 640)):
    """A scatter plot with a log-scale x axis, each point labelled, as a BGR ``uint8`` image.

    Args:
        points: ``(label, x, y, highlighted)`` tuples, ``x > 0``; unhighlighted points are drawn
            as red rings (e.g. collapsed models).
        size: ``(width, height)`` in pixels.
    """
    width, height = size
    left, right, top, bottom = 80, 30, 50, 70
    img = np.full((height, width, 3), 255, np.uint8)
    points = [p for p in points if p[1] and p[1] > 0 and p[2] is not None and math.isfinite(p[2])]
    logs = [math.log10(p[1]) for p in points] or [0.0]
    x_lo, x_hi = math.floor(min(logs)), math.ceil(max(logs))
    if x_hi - x_lo < 1:
        x_hi = x_lo + 1
    ys = [p[2] for p in points] or [0.0, 1.0]
    y_lo = max(0.0, math.floor((min(ys) - 0.05) * 10) / 10)
    y_hi = min(1.0, math.ceil((max(ys) + 0.05) * 10) / 10)
    if y_hi - y_lo < 0.2:
        y_lo, y_hi = max(0.0, y_hi - 0.2), max(0.2, y_hi)
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x, y):
        return (int(round(left + (math.log10(x) - x_lo) / (x_hi - x_lo) * plot_w)),
                int(round(top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h)))

    for k in range(x_lo, x_hi + 1):
        x, _ = to_px(10.0 ** k, y_lo)
        cv2.line(img, (x, top), (x, top + plot_h), _GRID, 1)
        label = f"{10.0 ** k:g}"
        _put(img, label, (x - _text_wh(label)[0] / 2, top + plot_h + 20))
        if k < x_hi:
            for m in range(2, 10):
                xm, _ = to_px(m * 10.0 ** k, y_lo)
                cv2.line(img, (xm, top + plot_h), (xm, top + plot_h - 5), _INK, 1)
                if m in (2, 5) and x_hi - x_lo <= 2:  # few decades: label 2 and 5 too
                    label = f"{m * 10.0 ** k:g}"
                    _put(img, label, (xm - _text_wh(label, 0.4)[0] / 2, top + plot_h + 18), 0.4, _MINOR_INK)
    step = 0.1 if y_hi - y_lo > 0.35 else 0.05
    for i in range(int(round((y_hi - y_lo) / step)) + 1):
        value = y_lo + i * step
        _, y = to_px(10.0 ** x_lo, value)
        cv2.line(img, (left, y), (left + plot_w, y), _GRID, 1)
        label = f"{value:.2f}"
        _put(img, label, (left - 8 - _text_wh(label)[0], y + 4))
    cv2.rectangle(img, (left, top), (left + plot_w, top + plot_h), _INK, 1)

    placed = []
    centres = [to_px(p[1], p[2]) for p in points]
    for (cx, cy), (_, _, _, highlighted) in zip(centres, points):
        if highlighted:
            cv2.circle(img, (cx, cy), 5, _OK_COLOUR, -1, cv2.LINE_AA)
        else:
            cv2.circle(img, (cx, cy), 5, _BAD_COLOUR, 2, cv2.LINE_AA)
        placed.append((cx - 6, cy - 6, cx + 6, cy + 6))
    for (cx, cy), (label, _, _, highlighted) in zip(centres, points):
        w, h = _text_wh(label, 0.42)
        # Beside the point first, then above and below, then further away; failing all, the spot
        # that covers the fewest labels and points.
        candidates = [(cx + 8, cy - 4), (cx + 8, cy + h + 2), (cx - w - 8, cy - 4), (cx - w - 8, cy + h + 2),
                      (cx - w / 2, cy - 10), (cx - w / 2, cy + h + 8)]
        candidates += [(x, y + dy) for dy in (-h - 4, h + 4) for x, y in candidates[:4]]
        boxes = [(x, y - h, x + w, y + 2) for x, y in candidates]
        inside = [b for b in boxes if b[0] >= left + 2 and b[2] <= left + plot_w - 2
                  and b[1] >= top + 2 and b[3] <= top + plot_h - 2] or boxes
        box = min(inside, key=lambda b: sum(_overlaps(b, o) for o in placed))
        placed.append(box)
        _put(img, label, (box[0], box[3] - 2), 0.42, _INK if highlighted else _BAD_COLOUR)

    tw = _text_wh(title, 0.6)[0]
    _put(img, title, ((width - tw) / 2, 30), 0.6)
    xw = _text_wh(xlabel, 0.5)[0]
    _put(img, xlabel, (left + (plot_w - xw) / 2, height - 20), 0.5)
    yw, yh = _text_wh(ylabel, 0.5)
    strip = np.full((yh + 6, yw + 6, 3), 255, np.uint8)
    _put(strip, ylabel, (3, yh), 0.5)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = max(0, top + (plot_h - strip.shape[0]) // 2)
    img[y0:y0 + strip.shape[0], 8:8 + strip.shape[1]] = strip[:height - y0]
    if not points:
        _put(img, "no scored model yet", (left + 20, top + 30), 0.6)
    return img


def _display_image(image, fov=None):
    """A standardised float image as BGR ``uint8``, each channel stretched between its 1st and 99th percentile."""
    region = image[fov] if fov is not None and fov.any() else image.reshape(-1, image.shape[2])
    lo, hi = np.percentile(region, 1, axis=0), np.percentile(region, 99, axis=0)
    scaled = np.clip((image - lo) / np.maximum(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    if scaled.shape[2] == 1:
        return cv2.cvtColor(scaled, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(scaled[:, :, :3], cv2.COLOR_RGB2BGR)


def _palette(num_classes):
    rng = np.random.RandomState(1)
    colours = rng.randint(60, 256, size=(max(num_classes, 2), 3)).astype(np.uint8)
    colours[0] = 0
    colours[1] = 255
    return colours


def _render_labels(labels, gt=None, fov=None, num_classes=2):
    """Colour a label map: binary with ``gt`` as white TP, red FP, blue FN; otherwise one colour per class."""
    if gt is not None and num_classes <= 2:
        pred, truth = labels > 0, gt > 0
        out = np.zeros(labels.shape + (3,), np.uint8)
        out[pred & truth], out[pred & ~truth], out[~pred & truth] = _TP, _FP, _FN
    else:
        out = _palette(num_classes)[np.clip(labels, 0, max(num_classes, 2) - 1)]
    if fov is not None:
        out[~fov] = _OUTSIDE
    return out


def _fit(image, tile, interpolation):
    """``image`` scaled to fit a ``tile`` square (aspect kept), centred on grey."""
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = cv2.resize(image, size, interpolation=interpolation)
    canvas = np.full((tile, tile, 3), 235, np.uint8)
    y, x = (tile - size[1]) // 2, (tile - size[0]) // 2
    canvas[y:y + size[1], x:x + size[0]] = resized
    return canvas


def draw_prediction_grid(images, columns, legend, tile=160, per_row=6):
    """Panels of tiles as a BGR ``uint8`` image: one panel per column, one tile per test image.

    Args:
        images: names of the test images (panel rows), for the caption.
        columns: ``(title, tiles)`` with one BGR tile (any size) per image.
        legend: a line of text under the grid.
    """
    caption, gap = 24, 6
    panel_w, panel_h = tile + gap, caption + len(images) * (tile + gap)
    n_rows = math.ceil(len(columns) / per_row)
    width = max(min(len(columns), per_row) * panel_w + gap, _text_wh(legend, 0.45)[0] + 2 * gap)
    header, footer = 34, 30
    img = np.full((header + n_rows * panel_h + footer, width, 3), 255, np.uint8)
    _put(img, "test images: " + ", ".join(images), (gap, 22), 0.5)
    for index, (title, tiles) in enumerate(columns):
        x0 = gap + (index % per_row) * panel_w
        y0 = header + (index // per_row) * panel_h
        text = title
        while len(text) > 1 and _text_wh(text, 0.45)[0] > tile:
            text = text[:-1]
        _put(img, text, (x0, y0 + 17), 0.45)
        for row, tile_image in enumerate(tiles):
            y = y0 + caption + row * (tile + gap)
            interpolation = cv2.INTER_AREA if index == 0 else cv2.INTER_NEAREST
            img[y:y + tile, x0:x0 + tile] = _fit(tile_image, tile, interpolation)
    _put(img, legend, (gap, img.shape[0] - 10), 0.45)
    return img


def _prediction_grid(cfg, scored, run_dir):
    """Image, ground truth and every scored model's prediction on the grid images, or None."""
    from .data import load_split, synthetic_root

    with_grid = [r for r in scored if r.get("grid")]
    if not with_grid:
        return None
    names = list(with_grid[0]["grid"])
    m, d = cfg.model, cfg.data
    dataset = load_split(d.root or synthetic_root(), d.test_split, num_classes=max(2, m.num_classes),
                         in_channels=m.in_channels, preprocess=d.preprocess, cache=False)
    samples = [dataset[dataset.names.index(name)] for name in names if name in dataset.names]
    if not samples:
        return None
    fovs = [s.fov if cfg.eval.use_fov else None for s in samples]
    n = max(2, m.num_classes)
    columns = [("image", [_display_image(s.image, fov) for s, fov in zip(samples, fovs)]),
               ("ground truth", [_render_labels(s.mask, fov=fov, num_classes=n) for s, fov in zip(samples, fovs)])]
    for record in with_grid:
        tiles = []
        for sample, fov in zip(samples, fovs):
            rel = record["grid"].get(sample.name)
            labels = cv2.imread(str(run_dir / rel), cv2.IMREAD_UNCHANGED) if rel else None
            if labels is None or labels.shape != sample.mask.shape:
                tiles.append(np.full(sample.mask.shape + (3,), 235, np.uint8))
            else:
                tiles.append(_render_labels(labels.astype(np.int64), sample.mask, fov, n))
        suffix = f" ({record['status']})" if record["status"] != "ok" else ""
        columns.append((record["model"] + suffix, tiles))
    legend = ("white: true positive, red: false positive, blue: false negative, dark grey: outside the FOV"
              if n == 2 else "one colour per class")
    return draw_prediction_grid([s.name for s in samples], columns, legend)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
