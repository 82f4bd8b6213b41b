"""MoCo v2 self-supervised pretraining of a segmentation model's encoder on unlabelled images.

    python ssl_pretrain/moco.py                                   # UNet encoder, synthetic train images
    python ssl_pretrain/moco.py --model unet --set model.args.base_channels=32 \\
        --data ../shared/data/DRIVE --set data.preprocess=green_clahe model.in_channels=1 --iterations 2000 \\
        --region 128                                              # 20 large images: 128 px windows as instances

    python ssl_pretrain/moco.py --resume work_dirs/moco_unet      # continue an interrupted run

--data is a folder of images or a dataset root with <split>/images (masks are never read). The
model, its arguments, channels, preprocessing, seed and device come from the config (--config,
--set); the MoCo settings from the flags below. Writes <work-dir>/config.yaml and moco.json (the
settings), log.csv, last.npz (both branches, queue, optimizer and generators, every
--checkpoint-interval steps) and encoder.npz, which jmedseg.ssl.load_encoder_weights loads strictly
into model.get_encoder(). A run killed at any moment and resumed with --resume logs the same losses
and writes the same encoder as one that was never interrupted.
"""
import argparse
import csv
import io
import json
import math
import time
from pathlib import Path

from jmedseg import distributed as dist
from jmedseg.cli import add_config_args, config_from_args, new_parser, run_tool
from jmedseg.errors import CheckpointError, ConfigError

# The flags that define a run: saved in moco.json and restored by --resume.
RUN_OPTIONS = ("split", "iterations", "batch", "size", "region", "queue", "momentum", "temperature", "dim",
               "hidden_dim", "bn_splits", "min_scale", "no_colour", "lr", "weight_decay", "log_interval",
               "checkpoint_interval")


def positive(kind):
    """An argparse type accepting numbers of ``kind`` greater than 0."""
    def parse(text):
        value = kind(text)
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def pick_work_dir(requested, model_name):
    """``--work-dir`` as given, else ``work_dirs/moco_<model>`` with a fresh ``-N`` suffix if taken."""
    if requested:
        return Path(requested)
    base = path = Path("work_dirs") / f"moco_{model_name}"
    n = 1
    while any((path / name).exists() for name in ("moco.json", "encoder.npz", "log.csv")):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def restore_run_settings(parser, args):
    """Fill ``args`` from ``<RUN>/moco.json`` and return the config of ``<RUN>/config.yaml``.

    Raises:
        ConfigError: not a MoCo run folder, or flags given that would change the run's settings.
    """
    from jmedseg.config import load_config

    run = Path(args.resume)
    settings_file, config_file = run / "moco.json", run / "config.yaml"
    if not settings_file.is_file() or not config_file.is_file():
        raise ConfigError(f"{run}: not a MoCo run folder (no moco.json and config.yaml); give the folder "
                          "ssl_pretrain/moco.py wrote")
    if args.model or args.config or args.data or args.set or args.seed is not None or args.work_dir:
        raise ConfigError("--resume continues a run with its saved config and folder; "
                          "--model/--config/--data/--set/--seed/--work-dir cannot be combined with it")
    try:
        saved = json.loads(settings_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{settings_file}: not readable JSON ({err})") from None
    if not isinstance(saved, dict) or set(saved) != set(RUN_OPTIONS):
        raise ConfigError(f"{settings_file}: expected the keys {', '.join(RUN_OPTIONS)}")
    for name in RUN_OPTIONS:
        given, default = getattr(args, name), parser.get_default(name)
        if given != default and given != saved[name]:
            raise ConfigError(f"--{name.replace('_', '-')}: the run was started with {saved[name]!r}; "
                              "--resume continues with its saved settings")
        setattr(args, name, saved[name])
    args.work_dir = str(run)
    overrides = [f"device={args.device}"] if args.device else []
    return load_config(config_file, overrides)


def rows_to_csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--split", help="images sub-folder <data>/<split>/images (default: data.train_split)")
    parser.add_argument("--iterations", type=positive(int), default=60, help="optimizer steps")
    parser.add_argument("--batch", type=positive(int), default=16, help="images per batch (the global batch under mpirun)")
    parser.add_argument("--size", type=positive(int),
                        help="side of the augmented views (default: 64, raised to the model's minimum input size "
                             "and rounded up to its size divisor)")
    parser.add_argument("--region", type=positive(int),
                        help="instances are random REGION x REGION windows of the images, both views cropped "
                             "from one window (default: whole images); for a few large images")
    parser.add_argument("--queue", type=positive(int), default=4096, help="negative keys K")
    parser.add_argument("--momentum", type=float, default=0.999, help="key encoder EMA coefficient m, in [0, 1)")
    parser.add_argument("--temperature", type=positive(float), default=0.2, help="softmax temperature")
    parser.add_argument("--dim", type=positive(int), default=128, help="projection output dimension")
    parser.add_argument("--hidden-dim", type=positive(int), default=2048, help="projection hidden width")
    parser.add_argument("--bn-splits", type=positive(int), default=2,
                        help="BatchNorm chunks per batch emulating shuffle BN (1: off)")
    parser.add_argument("--min-scale", type=positive(float), default=0.2,
                        help="smallest random-crop area, as a fraction of the image (MoCo v2: 0.2)")
    parser.add_argument("--no-colour", action="store_true",
                        help="crops and flips only: no colour jitter, grayscale or blur")
    parser.add_argument("--lr", type=positive(float), default=0.03, help="peak SGD learning rate (cosine)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay")
    parser.add_argument("--log-interval", type=positive(int), default=10,
                        help="write a log row every this many steps")
    parser.add_argument("--checkpoint-interval", type=positive(int), default=50,
                        help="write last.npz, everything --resume needs, every this many steps")
    parser.add_argument("--work-dir", help="output folder (default: work_dirs/moco_<model>)")
    parser.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its folder, with its "
                        "saved settings")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.resume:
        cfg = restore_run_settings(parser, args)
    else:
        cfg = config_from_args(args)
    if not 0 <= args.momentum < 1:
        raise ConfigError(f"--momentum: must be in [0, 1), got {args.momentum}")
    if args.min_scale > 1:
        raise ConfigError(f"--min-scale: must be in (0, 1], got {args.min_scale}")
    local_batch = dist.local_batch_size(args.batch, "--batch")
    if local_batch % args.bn_splits:
        per_rank = f" per rank ({dist.world_size()} MPI ranks)" if dist.is_distributed() else ""
        raise ConfigError(f"--batch {args.batch}: {local_batch} images{per_rank} must be a multiple of "
                          f"--bn-splits {args.bn_splits}")
    dist.check_backend()

    import numpy as np
    from tqdm import tqdm

    from jmedseg.data import synthetic_root
    from jmedseg.engine import LRSchedule, build_optimizer, set_lr
    from jmedseg.io import write_json, write_text
    from jmedseg.ssl import MoCo, MoCoAugment, TwoViewSampler, find_images, load_images
    from model_zoo import count_parameters, create_model
    from model_zoo.backend import jt, set_device

    device = set_device(cfg.device)
    seed = int(cfg.train.seed)
    jt.set_global_seed(seed)
    root = Path(cfg.data.root) if cfg.data.root else synthetic_root()
    split = args.split or cfg.data.train_split
    paths = find_images(root, split)
    images = load_images(paths, in_channels=cfg.model.in_channels, preprocess=cfg.data.preprocess)

    m = cfg.model
    model = create_model(m.name, in_channels=m.in_channels, num_classes=m.num_classes, **dict(m.args))
    divisor, minimum = model.size_divisor, model.min_input_size
    if args.size is None:
        args.size = math.ceil(max(64, minimum) / divisor) * divisor
    if args.size % divisor or args.size < minimum:
        raise ConfigError(f"--size {args.size}: the encoder of {m.name} needs a multiple of {divisor} "
                          f"of at least {minimum}")
    moco = MoCo(model, dim=args.dim, hidden_dim=args.hidden_dim, queue_size=args.queue, momentum=args.momentum,
                temperature=args.temperature, bn_splits=args.bn_splits, seed=seed)
    colour_off = dict(jitter_p=0, gray_p=0, blur_p=0) if args.no_colour else {}
    augment = MoCoAugment(args.size, scale=(args.min_scale, 1.0), **colour_off)
    sampler = TwoViewSampler(images, args.batch, augment, seed=seed, region=args.region)
    optimizer = build_optimizer("sgd", moco.query_parameters(), args.lr, args.weight_decay, momentum=0.9)
    schedule = LRSchedule("cosine", args.lr, args.iterations)
    work_dir = pick_work_dir(args.work_dir, m.name)
    dist.barrier()  # every rank picks the folder before rank 0 writes into it
    last = work_dir / "last.npz"
    rows, window, first_step, elapsed = [], [], 0, 0.0
    if args.resume:
        if not last.is_file():
            raise CheckpointError(f"{last}: not found; the run was interrupted before its first checkpoint, "
                                  "start it again")
        meta = moco.load_state(last, optimizer)
        sampler.load_state_dict(meta["sampler"])
        rows, window, first_step, elapsed = meta["rows"], meta["window"], meta["step"], meta["elapsed_s"]
        print(f"resuming {work_dir} at step {first_step}")
    else:
        if (work_dir / "moco.json").exists():
            raise ConfigError(f"--work-dir {work_dir}: holds a MoCo run already; continue it with --resume "
                              f"{work_dir} or pick another folder")
        if dist.is_main():
            try:
                work_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(f"{work_dir}: cannot create the run folder ({err.strerror})") from None
            cfg.dump(work_dir / "config.yaml")
            write_json(work_dir / "moco.json", {name: getattr(args, name) for name in RUN_OPTIONS})

    print(f"run folder: {work_dir}")
    print(f"MoCo v2: {m.name} encoder ({count_parameters(moco.encoder) / 1e6:.2f} M params) on {device}; "
          f"{len(images)} images from {paths[0].parent}; {args.iterations} steps of {args.batch} x {args.size} px"
          f"{f' views of {args.region} px windows' if args.region else ''}, queue {args.queue}, m {args.momentum}, "
          f"tau {args.temperature}")
    if args.region is None and args.queue > len(images):
        print(f"note: the queue ({args.queue}) is longer than the image list ({len(images)}), so it holds older "
              f"keys of the query's own image as negatives; instance-discrimination accuracy stays low")

    start = window_start = time.perf_counter() - elapsed
    bar = tqdm(total=args.iterations, initial=first_step, desc=f"moco {m.name}",
               disable=args.no_progress or not dist.is_main(), dynamic_ncols=True)
    for step in range(first_step, args.iterations):
        lr = schedule.lr_at(step)
        set_lr(optimizer, lr)
        queries, keys = next(sampler)
        loss, top1 = moco.train_step(dist.shard(queries), dist.shard(keys), optimizer)
        if not math.isfinite(loss):
            hint = f"; the last good state is {last}" if last.exists() else ""
            raise FloatingPointError(f"loss became {loss} at step {step + 1} (lr {lr:.3g}); try a lower --lr{hint}")
        window.append((loss, top1))
        bar.update(1)
        now = time.perf_counter()
        if (step + 1) % args.log_interval == 0 or step + 1 == args.iterations:
            mean_loss, mean_top1 = np.mean(window, axis=0)
            rows.append({"step": step + 1, "lr": lr, "loss": float(mean_loss), "top1": float(mean_top1),
                         "images_per_s": len(window) * args.batch / max(now - window_start, 1e-9),
                         "elapsed_s": now - start})
            if dist.is_main():
                write_text(work_dir / "log.csv", rows_to_csv(rows))
            bar.set_postfix(loss=f"{mean_loss:.4f}", top1=f"{mean_top1:.3f}", lr=f"{lr:.2e}")
            window, window_start = [], now
        if dist.is_main() and ((step + 1) % args.checkpoint_interval == 0 or step + 1 == args.iterations):
            moco.save_state(last, optimizer, step=step + 1, rows=rows, window=window, elapsed_s=now - start,
                            sampler=sampler.state_dict())
    bar.close()

    if dist.is_distributed():
        drift = dist.divergence(moco.replicated_state())
        if drift > 1e-6:
            raise RuntimeError(f"MPI ranks diverged: the queue or key encoder differs by {drift:.3g} between ranks")
        print(f"{dist.world_size()} ranks agree: the same queue and key encoder on every rank "
              f"(largest difference {drift:.1e})")
    if not dist.is_main():
        return 0
    moco.save_encoder(work_dir / "encoder.npz", iterations=args.iterations, batch_size=args.batch, size=args.size,
                      region=args.region, lr=args.lr, weight_decay=args.weight_decay, min_scale=args.min_scale,
                      colour_augment=not args.no_colour, seed=seed, data=str(paths[0].parent),
                      num_images=len(images), first_loss=rows[0]["loss"], first_top1=rows[0]["top1"],
                      final_loss=rows[-1]["loss"], final_top1=rows[-1]["top1"],
                      train_time_s=time.perf_counter() - start)
    print(f"loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}, top-1 {rows[0]['top1']:.3f} -> "
          f"{rows[-1]['top1']:.3f} (first and last {args.log_interval}-step windows)")
    print(f"encoder weights: {work_dir / 'encoder.npz'}")
    return 0


if __name__ == "__main__":
    run_tool(main)
