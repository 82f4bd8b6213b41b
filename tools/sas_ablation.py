"""SAS ablation: baseline, +Aug, +STN, +SSL and +SAS over several seeds, in-domain and corrupted.

    python tools/sas_ablation.py --data ../shared/data/DRIVE                       # DRIVE, seeds 0 1 2
    python tools/sas_ablation.py --config configs/synthetic/unet.yaml --seeds 0 \\
        --set train.iterations=100 --severities 3 --out /tmp/ablation.md            # a quick look

Every (variant, seed) run is ``tools/train.py`` with the variant's flags, then ``tools/test.py
--corruptions`` on its weights: the in-domain test Dice (pooled, the config's evaluation) and the
mean Dice over the corruption suite. +SSL and +SAS share, per seed, one MoCo-pretrained encoder:
the one ``--sas`` pretrains on the training images and caches (``tools/train.py``). Run folders
live under ``--work-dir``; a run whose report exists is skipped, an interrupted training is
resumed, so the command can be stopped and started again. The report (mean ± sample std over
seeds, the baseline's headroom, Dice per corruption, the per-seed values, the command, commit and
hardware) is rewritten after every run.
"""
import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from jmedseg.cli import REPO_ROOT, config_from_args, new_parser, run_tool
from jmedseg.errors import ConfigError
from train import cached_ssl_encoder  # tools/train.py: this script's folder is on sys.path

VARIANTS = {"baseline": [], "aug": ["--aug"], "stn": ["--stn"], "ssl": ["--ssl"], "sas": ["--sas"]}
"""Variant name -> tools/train.py flags; ``--ssl`` is followed by the seed's MoCo encoder."""
LABELS = {"baseline": "UNet baseline", "aug": "+Aug", "stn": "+STN", "ssl": "+SSL", "sas": "+SAS (all three)"}


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


def ssl_encoder(args, seed):
    """The seed's MoCo encoder: the one ``tools/train.py --sas`` pretrains once and caches for this config."""
    run_args = argparse.Namespace(model=None, config=args.config, data=args.data, seed=seed, device=None, set=args.set)
    return cached_ssl_encoder(config_from_args(run_args))


def run_variant(args, variant, seed, work_dir):
    """Train and score one (variant, seed); returns its ``tools/test.py --corruptions`` report."""
    run = work_dir / f"{variant}-seed{seed}"
    report = run / "robustness.json"
    log = work_dir / f"{variant}-seed{seed}.log"
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
              "--severities", args.severities, "--out", str(report)], log)
    return json.loads(report.read_text(encoding="utf-8"))


def _scores(report):
    """(in-domain Dice, corruption-suite mean Dice) of one run's report."""
    return report["pooled"]["dice"], report["corruption_mean_dice"]


def _per_corruption(report):
    """Corruption name -> the run's Dice averaged over the severities run."""
    return {name: float(np.mean(list(by_severity.values()))) for name, by_severity in report["corruptions"].items()}


def _mean_std(values):
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _corruption_table(variants, results):
    """Markdown lines: pooled Dice per corruption (mean over severities, then over seeds) for each variant."""
    done = [v for v in variants if results.get(v)]
    if not done:
        return []
    names = list(next(iter(results[done[0]].values()))["corruptions"])
    lines = ["", "Dice per corruption (mean over the severities run, then over seeds):", "",
             "| corruption | " + " | ".join(LABELS[v] for v in done) + " |", "|---|" + "---:|" * len(done),
             "| none (in-domain) | " + " | ".join(f"{np.mean([_scores(r)[0] for r in results[v].values()]):.4f}"
                                                for v in done) + " |"]
    for name in names:
        cells = [f"{np.mean([_per_corruption(r)[name] for r in results[v].values()]):.4f}" for v in done]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_table(path, args, results, command):
    """The markdown report: mean ± std per variant, the change against the baseline, Dice per corruption, per-seed
    values. ``results`` maps variant -> seed -> the run's ``tools/test.py --corruptions`` report."""
    from jmedseg.benchmark import git_commit, host_info
    from jmedseg.io import write_text

    base = [np.mean(values) for values in zip(*map(_scores, results.get("baseline", {}).values()))]
    config = Path(args.config).resolve()
    shown = config.relative_to(REPO_ROOT) if config.is_relative_to(REPO_ROOT) else config
    lines = ["# SAS ablation", "",
             f"Config `{shown}`, data `{args.data or 'from the config'}`, seeds {', '.join(map(str, args.seeds))}"
             f"{', overrides ' + ' '.join(f'`{s}`' for s in args.set) if args.set else ''}; corruptions "
             f"`{' '.join(args.corruptions)}` at severities {args.severities}. In-domain: pooled test Dice. "
             "Corrupted: mean pooled Dice over the corruption suite. Mean ± sample standard deviation over seeds; "
             "Δ: difference of the means from the baseline.", "",
             "| variant | in-domain Dice | Δ | corruption-suite Dice | Δ | seeds done |",
             "|---|---:|---:|---:|---:|---:|"]
    for variant in args.variants:
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
    lines += _corruption_table(args.variants, results)
    lines += ["", "Per seed (in-domain / corruption-suite Dice):", ""]
    for variant in args.variants:
        for seed, report in sorted(results.get(variant, {}).items()):
            clean, corrupt = _scores(report)
            lines.append(f"- {LABELS[variant]}, seed {seed}: {clean:.4f} / {corrupt:.4f}")
    host = host_info()
    lines += ["", f"- Command: `{command}`", f"- Commit: `{git_commit(ignore=[path])}`",
              f"- Hardware: {host['cpu']}, {host['usable_cores']} usable of {host['cores']} cores; "
              f"Python {host['python']}",
              f"- Run folders: `{args.work_dir}`", ""]
    write_text(path, "\n".join(lines))


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "drive" / "unet.yaml"),
                        help="training config of every run (default: configs/drive/unet.yaml)")
    parser.add_argument("--data", help="dataset root (default: the config's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    parser.add_argument("--corruptions", nargs="+", default=["all"], help="corruptions (default: the whole suite)")
    parser.add_argument("--severities", default="1,2,3,4,5", help="corruption severities, comma-separated")
    parser.add_argument("--work-dir", default="work_dirs/sas_ablation", help="parent of the run folders")
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "sas_ablation.md"), help="markdown report")
    args = parser.parse_args(argv)
    if not Path(args.config).is_file():
        raise ConfigError(f"--config: {args.config}: no such file")
    if args.data and not Path(args.data).is_dir():
        raise ConfigError(f"--data: {args.data}: no such folder")
    command = shlex.join(["python", "tools/sas_ablation.py", *argv])
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for seed in args.seeds:
        for variant in args.variants:
            report = run_variant(args, variant, seed, work_dir)
            results.setdefault(variant, {})[seed] = report
            clean, corrupt = _scores(report)
            print(f"{LABELS[variant]}, seed {seed}: in-domain Dice {clean:.4f}, corruption-suite Dice {corrupt:.4f}",
                  flush=True)
            write_table(args.out, args, results, command)
    print(f"table: {args.out}")
    return 0


if __name__ == "__main__":
    run_tool(main)
