"""Evaluate a checkpoint on a dataset split and print a metrics table.

    python tools/test.py work_dirs/unet_synthetic/best.npz
    python tools/test.py best.npz --data ../shared/data/DRIVE --split test --out report.json
    python tools/test.py best.npz --corruptions all --severities 1,3,5

With ``--corruptions`` the split is also scored under the corruptions of :mod:`jmedseg.corruptions`
(deterministic, seeded per image and corruption): a table of pooled Dice per corruption and severity
is printed and the report gains ``corruptions: {name: {severity: dice}}`` and ``corruption_mean_dice``.

``--without-stn`` scores the segmenter inside an STN checkpoint on the images as they are, i.e. with
the transform fixed to the identity: set against the same command without it, what the STN's
transforms add or cost at test time.
"""
from pathlib import Path

from jmedseg.cli import new_parser, run_tool
from jmedseg.errors import ConfigError, DataError


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .npz checkpoint written by tools/train.py")
    parser.add_argument("--data", help="dataset root (default: the one the checkpoint was trained on)")
    parser.add_argument("--split", default="test", help="split folder to evaluate")
    parser.add_argument("--out", help="JSON report path (default: <checkpoint folder>/test_<split>.json)")
    parser.add_argument("--tta", action="store_true", help="average flipped predictions")
    parser.add_argument("--tile-size", type=int, help="sliding-window tile size (default: whole image)")
    parser.add_argument("--corruptions", nargs="+", metavar="NAME",
                        help="also score corrupted copies: 'all' or names (comma- or space-separated; see "
                             "jmedseg.corruptions)")
    parser.add_argument("--severities", default="1,2,3,4,5", help="corruption severities, comma-separated, 1-5")
    parser.add_argument("--corruption-seed", type=int, default=0, help="seed of the corruptions")
    parser.add_argument("--without-stn", action="store_true",
                        help="score an STN checkpoint's segmenter without its transform (the identity)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="compute device")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from jmedseg.checkpoint import load_checkpoint
    from jmedseg.config import Config
    from jmedseg.corruptions import format_benchmark, parse_corruptions, parse_severities, run_benchmark
    from jmedseg.data import build_datasets, load_split
    from jmedseg.engine import evaluate, format_report
    from jmedseg.io import write_json
    from model_zoo.backend import set_device
    from model_zoo.stn import STNSegmenter

    corruptions = parse_corruptions(",".join(args.corruptions)) if args.corruptions else []
    severities = parse_severities(args.severities)
    if args.corruption_seed < 0:
        raise ConfigError(f"--corruption-seed: must be >= 0, got {args.corruption_seed}")
    set_device(args.device)
    model, meta = load_checkpoint(args.checkpoint)
    if args.without_stn:
        if not isinstance(model, STNSegmenter):
            raise ConfigError(f"{args.checkpoint}: --without-stn: this checkpoint's model has no STN")
        model = model.model
    cfg = Config.from_dict(meta["config"], source=f"{args.checkpoint} (saved config)")
    m, d, e = cfg.model, cfg.data, cfg.eval
    if args.data:
        dataset = load_split(args.data, args.split, num_classes=m.num_classes, in_channels=m.in_channels,
                             preprocess=d.preprocess)
    elif d.root:
        dataset = load_split(d.root, args.split, num_classes=m.num_classes, in_channels=m.in_channels,
                             preprocess=d.preprocess)
    else:
        dataset = build_datasets(None, test_split=args.split, num_classes=m.num_classes,
                                 in_channels=m.in_channels, preprocess=d.preprocess).get("test")
    if not dataset:
        raise DataError(f"split {args.split!r}: no images to evaluate")
    summary = evaluate(model, dataset, m.num_classes, threshold=e.threshold, use_fov=e.use_fov,
                       distances=e.distances, tile_size=args.tile_size or e.tile_size,
                       tile_overlap=e.tile_overlap, tta=args.tta or e.tta, progress=not args.no_progress,
                       desc=args.split)
    report = {"checkpoint": str(args.checkpoint), "split": args.split, "num_images": len(dataset),
              "without_stn": args.without_stn, **summary}
    table = None
    if corruptions:
        def pooled_dice(corrupted):
            result = evaluate(model, corrupted, m.num_classes, threshold=e.threshold, use_fov=e.use_fov,
                              distances=False, tile_size=args.tile_size or e.tile_size,
                              tile_overlap=e.tile_overlap, tta=args.tta or e.tta, progress=not args.no_progress,
                              desc=f"{corrupted.name}@{corrupted.severity}")
            return result["pooled"]["dice"]

        table, mean_dice = run_benchmark(dataset, pooled_dice, corruptions, severities, seed=args.corruption_seed)
        report.update(corruptions=table, corruption_mean_dice=mean_dice)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"test_{args.split}.json"
    write_json(out, report)
    print(format_report(summary, title=f"{args.split} ({len(dataset)})"))
    if table is not None:
        print(format_benchmark(table, report["corruption_mean_dice"], metric="pooled dice"))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    run_tool(main)
