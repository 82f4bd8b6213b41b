"""Train a segmentation model.

    python tools/train.py --model unet                       # embedded synthetic dataset
    python tools/train.py --model unet --config configs/drive/unet.yaml --data ../shared/data/DRIVE
"""
from pathlib import Path

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


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--work-dir", help="run folder (default: work_dirs/<config>_<dataset>)")
    parser.add_argument("--overwrite", action="store_true", help="reuse a run folder that holds a run")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)

    from jmedseg.engine import Trainer, format_report
    from model_zoo import count_parameters

    work_dir = pick_work_dir(cfg, args.work_dir, args.overwrite)
    trainer = Trainer(cfg, work_dir, progress=not args.no_progress)
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
