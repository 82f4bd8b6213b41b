"""Time a training step (forward, backward, Adam) or an inference pass; prints one JSON line.

    python tools/speed.py --model unet --mode train --batch 4 --size 256 --set model.args.base_channels=32

Medians over ``--steps`` timed iterations after ``--warmup`` untimed ones (which also compile
Jittor's kernels), with ``jt.sync_all()`` before each clock read.
"""
import json
import resource
import time

import numpy as np

from jmedseg.cli import REPO_ROOT, new_parser, run_tool


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--mode", choices=["train", "infer"], default="train",
                        help="a training step (forward, backward, Adam) or an inference pass")
    parser.add_argument("--batch", type=int, default=4, help="batch size (train; inference uses 1 unless given)")
    parser.add_argument("--size", type=int, default=256, help="square input side")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (kernel compiling)")
    parser.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="compute device")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from jmedseg.config import load_config
    from jmedseg.losses import build_loss
    from model_zoo import count_parameters, create_model
    from model_zoo.backend import jt, onednn_status, set_device

    cfg = load_config(args.config or REPO_ROOT / "configs" / "default.yaml",
                      [f"model.name={args.model}"] + list(args.set))
    device = set_device(args.device)
    jt.set_global_seed(0)
    m = cfg.model
    model = create_model(m.name, in_channels=m.in_channels, num_classes=m.num_classes, **dict(m.args))
    rs = np.random.RandomState(0)
    batch = args.batch if args.mode == "train" or "--batch" in argv else 1
    x = jt.array(rs.randn(batch, m.in_channels, args.size, args.size).astype("float32"))
    target = jt.array(rs.randint(0, m.num_classes, (batch, args.size, args.size)).astype("int32"))
    times = []
    if args.mode == "train":
        model.train()
        loss_fn = build_loss({"ce": 1.0}, m.num_classes)
        opt = jt.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(args.warmup + args.steps):
            jt.sync_all()
            t0 = time.perf_counter()
            out = model(x)
            opt.step(loss_fn(out[0] if isinstance(out, (list, tuple)) else out, target))
            jt.sync_all()
            times.append(time.perf_counter() - t0)
    else:
        model.eval()
        with jt.no_grad():
            for _ in range(args.warmup + args.steps):
                jt.sync_all()
                t0 = time.perf_counter()
                model(x).sync()
                jt.sync_all()
                times.append(time.perf_counter() - t0)
    median = float(np.median(times[args.warmup:]))
    print(json.dumps({
        "framework": f"jittor {jt.__version__}", "model": m.name, "args": dict(m.args), "mode": args.mode,
        "batch": batch, "size": args.size, "device": device, "onednn": onednn_status,
        "params": count_parameters(model), "median_s": round(median, 4),
        "images_per_s": round(batch / median, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
    return 0


if __name__ == "__main__":
    run_tool(main)
