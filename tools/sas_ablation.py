"""SAS ablation: baseline, +Aug, +STN, +SSL and +SAS over several seeds, in-domain and corrupted.

    python tools/sas_ablation.py --data ../shared/data/DRIVE                       # DRIVE, seeds 0 1 2
    python tools/sas_ablation.py --config configs/synthetic/unet.yaml --seeds 0 \\
        --set train.iterations=100 --severities 3 --out /tmp/ablation.md            # a quick look

Every (variant, seed) run is ``tools/train.py`` with the variant's flags, then ``tools/test.py
--corruptions`` on its weights: the in-domain test Dice (pooled, the config's evaluation) and the
mean Dice over the corruption suite. +SSL and +SAS share, per seed, one MoCo-pretrained encoder:
the one ``--sas`` pretrains on the training images and caches (``tools/train.py``). The diagnostic
variant ``aug_ssl`` (+Aug with that encoder, no STN) runs only when ``--variants`` names it.

Each finished run leaves a record in ``--records`` (default: beside the report, ``<report>_runs/``):
its scores (the ``tools/test.py`` report), the protocol that produced them (the run's resolved
training config without this machine's folders, the corruptions and severities, the MoCo settings
of the SSL variants), the commit, hardware and training time. Records hold numbers only, no
weights or images, so they can be committed: a later invocation, on this machine or another, skips
every (variant, seed) whose record matches its protocol, and refuses, naming the file and the keys,
a record made under another one. Without a record, a run whose folder under ``--work-dir`` holds
its report is scored from it, and an interrupted training is resumed, so the command can be stopped
and started again. The report (mean ± sample std over seeds, the baseline's headroom, Dice per
corruption, the per-seed values with their commits, the command and hardware) covers every record
in the folder, whichever variants and seeds this invocation runs, and is rewritten after every run.
"""
import argparse
import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from jmedseg.benchmark import git_commit, host_info, with_keys_added_since
from jmedseg.cli import REPO_ROOT, config_from_args, new_parser, run_tool
from jmedseg.config import load_config
from jmedseg.corruptions import parse_corruptions, parse_severities
from jmedseg.errors import ConfigError
from jmedseg.io import write_json
from train import SAS_MOCO_FLAGS, cached_ssl_encoder, flag_overrides  # tools/train.py: this folder is on sys.path

VARIANTS = {"baseline": [], "aug": ["--aug"], "stn": ["--stn"], "ssl": ["--ssl"], "sas": ["--sas"],
            "aug_ssl": ["--aug", "--ssl"]}
"""Variant name -> tools/train.py flags; ``--ssl`` is followed by the seed's MoCo encoder."""
LABELS = {"baseline": "UNet baseline", "aug": "+Aug", "stn": "+STN", "ssl": "+SSL", "sas": "+SAS (all three)",
          "aug_ssl": "+Aug+SSL (no STN)"}
ABLATION = ["baseline", "aug", "stn", "ssl", "sas"]
"""The ablation's rows, run by default; the other variants are diagnostics, shown once they have a run."""


def _run(command, log):
    """Run a project tool, its output appended to ``log``; a failure names the log."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT).returncode != 0:
            raise ConfigError(f"{log}: `{shlex.join(command[1:3])} …` failed; its output is in this log")


def _common(args):
    flags = ["--config", str(Path(args.config).resolve())]
    if args.data:
        flags += ["--data", str(Path(args.data).resolve())]
    return flags


def _run_args(args, seed, sets=None):
    return argparse.Namespace(model=None, config=args.config, data=args.data, seed=seed, device=None,
                              set=list(args.set if sets is None else sets))


def ssl_encoder(args, seed):
    """The seed's MoCo encoder: the one ``tools/train.py --sas`` pretrains once and caches for this config."""
    return cached_ssl_encoder(config_from_args(_run_args(args, seed)))


def _portable(config):
    """A resolved training config (a dict) without this machine's folders: ``data.root`` becomes the
    dataset folder's name, ``model.ssl`` (the seed's cached MoCo encoder) and ``work_dir`` go."""
    config["data"]["root"] = Path(config["data"]["root"]).name if config["data"]["root"] else None
    config["model"]["ssl"], config["work_dir"] = None, None
    return config


def protocol(args, variant, seed):
    """What decides a run's numbers: the resolved training config ``tools/train.py`` builds from the
    variant's flags, without this machine's folders (``data.root`` becomes the dataset folder's
    name; ``model.ssl``, the seed's cached MoCo encoder, is represented by the MoCo settings), and
    the corruptions and severities it is scored under."""
    flags = VARIANTS[variant]
    sets = flag_overrides(args.set, aug="sas" if "--aug" in flags else None, stn="--stn" in flags,
                          sas="--sas" in flags)
    config = _portable(config_from_args(_run_args(args, seed, sets)).to_dict())
    return {"config": config, "corruptions": parse_corruptions(",".join(args.corruptions)),
            "severities": parse_severities(args.severities),
            "moco": SAS_MOCO_FLAGS if {"--ssl", "--sas"} & set(flags) else None}


def _flat(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    items = {}
    for key, value in tree.items():
        items.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return items


def protocol_differences(recorded, current):
    """Dotted keys whose values differ between a record's protocol and this invocation's; keys added to
    the config schema since the record was made count only when not at their default."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        return ["protocol (missing)"]
    recorded = dict(recorded, config=with_keys_added_since(recorded["config"], current["config"],
                                                           load_config().to_dict()))
    old, new = _flat(recorded), _flat(current)
    return sorted(key for key in old.keys() | new.keys() if old.get(key, "<absent>") != new.get(key, "<absent>"))


def read_record(path, current):
    """The record at ``path``, which must have been made under ``current`` (see :func:`protocol`)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable run record ({err}); delete it to run that (variant, seed) again")
    differences = protocol_differences(record.get("protocol") if isinstance(record, dict) else None, current)
    if differences:
        shown = ", ".join(differences[:5]) + (f" and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise ConfigError(f"{path}: recorded under another protocol (differs in {shown}); give this protocol its "
                          "own --records folder (and --out), or delete the record to run it again")
    if not isinstance(record.get("report"), dict):
        raise ConfigError(f"{path}: run record without its report; delete it to run that (variant, seed) again")
    return record


def collect_records(args, records):
    """variant -> seed -> record, for every record in the folder (each must match this protocol)."""
    results = {}
    for path in sorted(records.glob("*-seed*.json")):
        variant, _, seed = path.stem.rpartition("-seed")
        if variant not in VARIANTS or not seed.isdigit():
            raise ConfigError(f"{path}: not a run record name (<variant>-seed<N>.json, variants {', '.join(VARIANTS)})")
        results.setdefault(variant, {})[int(seed)] = read_record(path, protocol(args, variant, int(seed)))
    return results


def check_run_folder(run, current):
    """Refuse to resume or reuse the run folder ``run`` when what it holds was trained (its
    ``config.yaml``) or scored (its ``robustness.json``) under another protocol than ``current``."""
    differences = []
    if (run / "config.yaml").exists():
        trained = _portable(load_config(run / "config.yaml").to_dict())
        differences += protocol_differences(dict(current, config=trained), current)
    if (run / "robustness.json").exists():
        try:
            scored = json.loads((run / "robustness.json").read_text(encoding="utf-8"))["corruptions"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{run / 'robustness.json'}: unreadable report ({err}); delete it to score the "
                              "run again")
        if set(scored) != set(current["corruptions"]):
            differences.append("corruptions")
        severities = set(current["severities"])
        if any({int(severity) for severity in by_severity} != severities for by_severity in scored.values()):
            differences.append("severities")
    if differences:
        raise ConfigError(f"{run}: run folder trained or scored under another protocol (differs in "
                          f"{', '.join(differences)}); delete it or give another --work-dir")


def run_variant(args, variant, seed, work_dir, records):
    """Train and score one (variant, seed) that has no record yet; writes its record and returns it."""
    run = work_dir / f"{variant}-seed{seed}"
    report = run / "robustness.json"
    log = work_dir / f"{variant}-seed{seed}.log"
    current = protocol(args, variant, seed)
    check_run_folder(run, current)
    if not report.exists():
        if not (run / "test_report.json").exists():
            if (run / "last.npz").exists():
                command = [sys.executable, "tools/train.py", "--resume", str(run), "--no-progress"]
            else:
                flags = [f if f != "--ssl" else f"--ssl={ssl_encoder(args, seed)}" for f in VARIANTS[variant]]
                command = [sys.executable, "tools/train.py", *_common(args), "--seed", str(seed), *flags,
                           "--work-dir", str(run), "--overwrite", "--no-progress"]
                if args.set:
                    command += ["--set", *args.set]
            _run(command, log)
        _run([sys.executable, "tools/test.py", str(run / "best.npz"), "--corruptions", *args.corruptions,
              "--severities", args.severities, "--out", str(report), "--no-progress"], log)
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    host = host_info()
    record = {"variant": variant, "seed": seed, "protocol": current,
              "commit": git_commit(ignore=[records, args.out]),
              "hardware": f"{host['cpu']}, {host['usable_cores']} usable of {host['cores']} cores; "
                          f"Python {host['python']}",
              "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "train_time_s": history.get("train_time_s"),
              "report": json.loads(report.read_text(encoding="utf-8"))}
    write_json(records / f"{variant}-seed{seed}.json", record)
    return record


def _scores(record):
    """(in-domain Dice, corruption-suite mean Dice) of one run's record."""
    return record["report"]["pooled"]["dice"], record["report"]["corruption_mean_dice"]


def _per_corruption(record):
    """Corruption name -> the run's Dice averaged over the severities run."""
    return {name: float(np.mean(list(by_severity.values())))
            for name, by_severity in record["report"]["corruptions"].items()}


def _mean_std(values):
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _corruption_table(variants, results):
    """Markdown lines: pooled Dice per corruption (mean over severities, then over seeds) for each variant."""
    done = [v for v in variants if results.get(v)]
    if not done:
        return []
    names = list(next(iter(results[done[0]].values()))["report"]["corruptions"])
    lines = ["", "Dice per corruption (mean over the severities run, then over seeds):", "",
             "| corruption | " + " | ".join(LABELS[v] for v in done) + " |", "|---|" + "---:|" * len(done),
             "| none (in-domain) | " + " | ".join(f"{np.mean([_scores(r)[0] for r in results[v].values()]):.4f}"
                                                for v in done) + " |"]
    for name in names:
        cells = [f"{np.mean([_per_corruption(r)[name] for r in results[v].values()]):.4f}" for v in done]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _shown(path):
    path = path.resolve()
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def _shown_variants(results):
    """The ablation's rows, then the diagnostic variants that have a run."""
    return ABLATION + [variant for variant in VARIANTS if variant not in ABLATION and results.get(variant)]


def write_table(path, args, results, command):
    """The markdown report: mean ± std per variant, the change against the baseline, Dice per corruption, per-seed
    values. ``results`` maps variant -> seed -> the run's record (see :func:`run_variant`)."""
    from jmedseg.io import write_text

    base = [np.mean(values) for values in zip(*map(_scores, results.get("baseline", {}).values()))]
    shown = _shown_variants(results)
    lines = ["# SAS ablation", "",
             f"Config `{_shown(Path(args.config))}`, data `{args.data or 'from the config'}`, "
             f"seeds {', '.join(map(str, sorted({seed for runs in results.values() for seed in runs})))}"
             f"{', overrides ' + ' '.join(f'`{s}`' for s in args.set) if args.set else ''}; corruptions "
             f"`{' '.join(args.corruptions)}` at severities {args.severities}. In-domain: pooled test Dice. "
             "Corrupted: mean pooled Dice over the corruption suite. Mean ± sample standard deviation over seeds; "
             "Δ: difference of the means from the baseline.", "",
             "| variant | in-domain Dice | Δ | corruption-suite Dice | Δ | seeds done |",
             "|---|---:|---:|---:|---:|---:|"]
    for variant in shown:
        done = results.get(variant, {})
        if not done:
            lines.append(f"| {LABELS[variant]} | – | – | – | – | 0 |")
            continue
        clean, corrupt = zip(*map(_scores, done.values()))
        deltas = ["–", "–"]
        if base and variant != "baseline":
            deltas = [f"{np.mean(clean) - base[0]:+.4f}", f"{np.mean(corrupt) - base[1]:+.4f}"]
        lines.append(f"| {LABELS[variant]} | {_mean_std(clean)} | {deltas[0]} | {_mean_std(corrupt)} | {deltas[1]} "
                     f"| {len(done)} |")
    if base:
        lines += ["", f"Headroom: the baseline loses {base[0] - base[1]:.4f} Dice from clean to corrupted test "
                  "images, so a variant that kept the baseline's clean Dice under every corruption would gain that "
                  "much on the corruption suite."]
    lines += _corruption_table(shown, results)
    lines += ["", "Per seed (in-domain / corruption-suite Dice; the commit and hardware of the run, its training "
              "time, when its record was written):", ""]
    for variant in shown:
        for seed, record in sorted(results.get(variant, {}).items()):
            clean, corrupt = _scores(record)
            minutes = f"{record['train_time_s'] / 60:.0f} min training" if record.get("train_time_s") else "–"
            lines.append(f"- {LABELS[variant]}, seed {seed}: {clean:.4f} / {corrupt:.4f} (`{record['commit'][:12]}`, "
                         f"{record['hardware']}; {minutes}; {record['written']})")
    lines += ["", f"- Command: `{command}`", f"- Run records: `{_shown(Path(args.records))}`",
              f"- Table written at commit `{git_commit(ignore=[path, args.records])}`", ""]
    write_text(path, "\n".join(lines))


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "drive" / "unet.yaml"),
                        help="training config of every run (default: configs/drive/unet.yaml)")
    parser.add_argument("--data", help="dataset root (default: the config's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=ABLATION,
                        help="rows of the table (default: the ablation's UNet baseline, +Aug, +STN, +SSL, +SAS; "
                        "aug_ssl, +Aug with the MoCo encoder and no STN, is a diagnostic run only when named)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    parser.add_argument("--corruptions", nargs="+", default=["all"], help="corruptions (default: the whole suite)")
    parser.add_argument("--severities", default="1,2,3,4,5", help="corruption severities, comma-separated")
    parser.add_argument("--work-dir", default="work_dirs/sas_ablation", help="parent of the run folders")
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "sas_ablation.md"),
                        help="markdown report (default: results/sas_ablation.md)")
    parser.add_argument("--records", help="folder of the per-run records (default: <out without .md>_runs)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    args.records = args.records or str(out.with_name(f"{out.stem}_runs"))
    if not Path(args.config).is_file():
        raise ConfigError(f"--config: {args.config}: no such file")
    if args.data and not Path(args.data).is_dir():
        raise ConfigError(f"--data: {args.data}: no such folder")
    command = shlex.join(["python", "tools/sas_ablation.py", *argv])
    work_dir, records = Path(args.work_dir).resolve(), Path(args.records).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    records.mkdir(parents=True, exist_ok=True)
    results = collect_records(args, records)
    for seed in args.seeds:
        for variant in args.variants:
            record = results.get(variant, {}).get(seed) or run_variant(args, variant, seed, work_dir, records)
            results.setdefault(variant, {})[seed] = record
            clean, corrupt = _scores(record)
            print(f"{LABELS[variant]}, seed {seed}: in-domain Dice {clean:.4f}, corruption-suite Dice {corrupt:.4f}",
                  flush=True)
            write_table(args.out, args, results, command)
    print(f"table: {args.out}")
    return 0


if __name__ == "__main__":
    run_tool(main)
