"""Train a segmentation model.

    python tools/train.py --model unet                       # embedded synthetic dataset
    python tools/train.py --model unet --config configs/drive/unet.yaml --data ../shared/data/DRIVE
"""
from pathlib import Path

from jmedseg import distributed as dist
from jmedseg.cli import add_config_args, config_from_args, new_parser, run_tool
from jmedseg.errors import ConfigError


def pick_work_dir(cfg, requested, overwrite):
    """The run folder: ``--work-dir`` as given, else ``work_dirs/<name>`` (a fresh ``-N`` suffix if taken)."""
    if requested:
        path = Path(requested)
        if (path / "config.yaml").exists() and not overwrite:
            raise ConfigError(f"{path}: already holds a run; pass --overwrite or choose another --work-dir")
        return path
    if cfg.work_dir:
        base = Path(cfg.work_dir)
    else:
        stem = Path(cfg.source).stem if cfg.source and Path(cfg.source).stem != "default" else cfg.model.name
        data = (cfg.data.name or "data").lower()
        base = Path("work_dirs") / (f"{cfg.model.name}_{data}" if stem == cfg.model.name else f"{stem}_{data}")
    path, n = base, 1
    while (path / "config.yaml").exists() and not overwrite:
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


# MoCo settings of the encoder ``--sas`` pretrains by itself. Instances are 128 px windows, not whole
# images: with DRIVE's 20 images a queue of whole-image keys holds mostly older keys of the query's
# own image, and 60 steps on them gave loss 6.67 and top-1 0.00 (degenerate); with windows 300 steps
# keep top-1 at 0.12-0.45 against 1024 negatives (DRIVE, seeds 0 and 1). Momentum 0.99 suits runs
# this short. Colour jitter is left out: on short runs over a few images it blocked learning
# entirely (fixed-pair retrieval stayed at chance), while crops and flips alone learn.
SAS_MOCO_FLAGS = ["--iterations", "300", "--region", "128", "--queue", "1024", "--momentum", "0.99", "--no-colour"]


def cached_ssl_encoder(cfg):
    """Encoder weights for ``--sas`` without ``--ssl``: MoCo-pretrain once per model/data/seed, then reuse."""
    import hashlib
    import json
    import os
    import subprocess
    import sys

    from jmedseg.cli import REPO_ROOT

    m, d = cfg.model, cfg.data
    key = json.dumps([m.name, dict(m.args), m.in_channels, d.root, d.preprocess, cfg.train.seed, SAS_MOCO_FLAGS],
                     sort_keys=True)
    cache = Path(os.environ.get("JMEDSEG_CACHE") or Path.home() / ".cache" / "jmedseg")
    folder = cache / "ssl" / f"{m.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    encoder = folder / "encoder.npz"
    if encoder.exists():
        print(f"SSL encoder (cached): {encoder}")
        return encoder
    if dist.is_distributed():
        raise ConfigError(f"--sas under mpirun: no cached SSL encoder for this model and data ({encoder}); "
                          "run ssl_pretrain/moco.py first (mpirun works there too) and pass --ssl ENCODER")
    moco = [sys.executable, str(REPO_ROOT / "ssl_pretrain" / "moco.py"), "--no-progress"]
    if (folder / "moco.json").exists():  # an earlier pretraining was interrupted: continue it
        print(f"SSL encoder: resuming the interrupted MoCo pretraining in {folder}")
        command = moco + ["--resume", str(folder)]
    else:
        print(f"SSL encoder: MoCo pretraining {m.name} first (cached in {folder})")
        folder.mkdir(parents=True, exist_ok=True)
        cfg.dump(folder / "run_config.yaml")
        command = moco + ["--config", str(folder / "run_config.yaml"), "--work-dir", str(folder), *SAS_MOCO_FLAGS]
    if subprocess.run(command).returncode != 0 or not encoder.exists():
        raise ConfigError(f"{folder}: MoCo pretraining failed; run ssl_pretrain/moco.py yourself and pass --ssl")
    return encoder


STN_PENALTY = 100.0
"""``train.stn_penalty`` that ``--stn`` and ``--sas`` set unless ``--set`` gives one.

On DRIVE the transform learns no dependence on the image, only a constant drift that the task's
small, consistent gradient on θ's bias drives: unpenalised a zoom-out (scale 1.2 after 8000 steps),
at weight 10 a 0.55 px shift that blurs thin vessels through the two resamplings (−0.003 Dice).
Weight 100 holds it near the identity, yet one constant of about 0.1 px still cost a seed
0.002–0.004 Dice (results/sas_findings.md), hence also :data:`STN_TOLERANCE`.
"""

STN_TOLERANCE = 0.004
"""``model.stn_tolerance`` that ``--stn`` and ``--sas`` set unless ``--set`` gives one: transforms
moving no image corner by more than 0.004 of the normalised coordinates (about one pixel of a
500-pixel image) are applied as the identity, so a penalised STN that has learned nothing resamples
nothing. The weight-100 penalty keeps DRIVE's constant transform at 0.0005 or less by the end of
training.
"""


def flag_overrides(sets=(), aug=None, stn=False, ssl=None, sas=False):
    """``sets`` (``--set`` overrides) with those that ``--aug [PIPELINE]``, ``--stn``, ``--ssl ENCODER``
    and ``--sas`` stand for: the flags override ``sets``, except ``train.stn_penalty`` and
    ``model.stn_tolerance``, whose :data:`STN_PENALTY` and :data:`STN_TOLERANCE` defaults a ``--set``
    value replaces.

    ``--sas`` without ``--ssl`` also sets ``model.ssl`` to the encoder :func:`cached_ssl_encoder` gives.
    """
    defaults, overrides = [], []
    if aug or sas:
        overrides.append(f"data.augment={aug or 'sas'}")
    if stn or sas:
        defaults += [f"train.stn_penalty={STN_PENALTY}", f"model.stn_tolerance={STN_TOLERANCE}"]
        overrides.append("model.stn=true")
    if ssl:
        overrides.append(f"model.ssl={Path(ssl).resolve()}")
    return defaults + list(sets) + overrides


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--work-dir", help="run folder (default: work_dirs/<config>_<dataset>)")
    parser.add_argument("--overwrite", action="store_true", help="reuse a run folder that holds a run")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--aug", nargs="?", const="sas", metavar="PIPELINE",
                        help="augmentation pipeline: a preset (default: sas) or a YAML file (data.augment)")
    parser.add_argument("--stn", action="store_true", help="spatial transformer front end (model.stn)")
    parser.add_argument("--ssl", metavar="ENCODER", help="encoder weights from ssl_pretrain/moco.py (model.ssl)")
    parser.add_argument("--sas", action="store_true", help="SAS: --aug sas + --stn + SSL encoder (--ssl, or MoCo "
                        "pretraining run first and cached)")
    parser.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its folder (or its "
                        "last.npz) with its saved config; --set may change e.g. train.lr")
    args = parser.parse_args(argv)

    from jmedseg.engine import Trainer, format_report
    from model_zoo import count_parameters

    if args.resume:
        run = Path(args.resume)
        work_dir = run if run.is_dir() else run.parent
        if not (work_dir / "config.yaml").exists():
            raise ConfigError(f"{work_dir}: not a run folder (no config.yaml); give the folder tools/train.py wrote")
        args.config = str(work_dir / "config.yaml")
        cfg = config_from_args(args)
        trainer = Trainer(cfg, work_dir, progress=not args.no_progress)
        step = trainer.resume(run if run.is_file() else None)
        print(f"resuming {work_dir} at step {step}")
    else:
        args.set = flag_overrides(args.set, args.aug, args.stn, args.ssl, args.sas)
        cfg = config_from_args(args)
        if args.sas and not args.ssl:
            args.set.append(f"model.ssl={cached_ssl_encoder(cfg)}")
            cfg = config_from_args(args)
        work_dir = pick_work_dir(cfg, args.work_dir, args.overwrite)
        dist.barrier()  # every rank picks the folder before rank 0 writes into it
        if dist.is_main():
            try:
                work_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(f"{work_dir}: cannot create the run folder ({err.strerror})") from None
        trainer = Trainer(cfg, work_dir, progress=not args.no_progress)
    if trainer.ssl_tensors:
        print(f"loaded {trainer.ssl_tensors} encoder tensors from {cfg.model.ssl}")
    ds = trainer.datasets
    print(f"run folder: {work_dir}")
    print(f"model {cfg.model.name} ({count_parameters(trainer.model) / 1e6:.2f} M params) "
          f"on {trainer.device}; data {cfg.data.root or 'synthetic'}: "
          f"{len(ds['train'])} train / {len(ds['val']) if ds.get('val') else 0} val / "
          f"{len(ds['test']) if ds.get('test') else 0} test images; {trainer.total_steps} steps")
    trainer.train()
    report = trainer.test()
    if report:
        print(format_report(report, title=f"test ({report['num_images']})"))
        print(f"test report: {work_dir / 'test_report.json'}")
    return 0


if __name__ == "__main__":
    run_tool(main)
