"""Evaluate a checkpoint on a dataset split and print a metrics table.

    python tools/test.py work_dirs/unet_synthetic/best.npz
    python tools/test.py best.npz --data ../shared/data/DRIVE --split test --out report.json
"""
from pathlib import Path

from jmedseg.cli import new_parser, run_tool
from jmedseg.errors import DataError


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .npz checkpoint written by tools/train.py")
    parser.add_argument("--data", help="dataset root (default: the one the checkpoint was trained on)")
    parser.add_argument("--split", default="test", help="split folder to evaluate")
    parser.add_argument("--out", help="JSON report path (default: <checkpoint folder>/test_<split>.json)")
    parser.add_argument("--tta", action="store_true", help="average flipped predictions")
    parser.add_argument("--tile-size", type=int, help="sliding-window tile size (default: whole image)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from jmedseg.checkpoint import load_checkpoint
    from jmedseg.config import Config
    from jmedseg.data import build_datasets, load_split
    from jmedseg.engine import evaluate, format_report
    from jmedseg.io import write_json
    from model_zoo.backend import set_device

    set_device(args.device)
    model, meta = load_checkpoint(args.checkpoint)
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
                       tile_overlap=e.tile_overlap, tta=args.tta or e.tta, progress=True, desc=args.split)
    report = {"checkpoint": str(args.checkpoint), "split": args.split, "num_images": len(dataset), **summary}
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"test_{args.split}.json"
    write_json(out, report)
    print(format_report(summary, title=f"{args.split} ({len(dataset)})"))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    run_tool(main)
