"""Time every augmentation op and the SAS preset on one CPU thread; prints one JSON line of images/s.

    python tools/aug_speed.py                      # 512 x 512 RGB, 50 repeats
    python tools/aug_speed.py --size 256 --channels 1 --repeats 100

The input is a synthetic fundus image (``jmedseg.data.synthetic.synthesize_sample``) with its vessel
mask and field of view. Each op runs with ``p: 1`` and its default arguments (``crop`` to half the
side), OpenCV limited to one thread (``cv2.setNumThreads(1)``) in this single process. ``sas`` is
the whole preset with its probabilities; ``standardise`` is the per-image normalisation the sampler
adds after augmentation. Rates are ``repeats / total seconds`` after ``--warmup`` untimed calls.
"""
import json
import time

from jmedseg.cli import new_parser, run_tool


def images_per_second(function, repeats, warmup):
    for _ in range(warmup):
        function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return repeats / (time.perf_counter() - start)


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square image side")
    parser.add_argument("--channels", type=int, default=3, choices=[1, 3], help="image channels")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per op")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    import cv2
    import numpy as np

    from jmedseg.augment import OPS, Pipeline
    from jmedseg.data.dataset import standardise
    from jmedseg.data.synthetic import synthesize_sample
    from jmedseg.errors import ConfigError

    if args.size < 32 or args.repeats < 1 or args.warmup < 0:
        raise ConfigError("--size must be >= 32, --repeats >= 1 and --warmup >= 0")
    cv2.setNumThreads(1)
    image, mask, fov = synthesize_sample(np.random.default_rng(0), args.size)
    if args.channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    mask, fov = (mask > 0).astype(np.int64), fov > 0

    rates = {}
    for name in OPS:
        entry = {"name": name, "p": 1.0}
        if name == "crop":
            entry["size"] = args.size // 2
        pipeline = Pipeline([entry], seed=0)
        rates[name] = images_per_second(lambda: pipeline(image, mask, fov), args.repeats, args.warmup)
    sas = Pipeline("sas", seed=0)
    rates["sas"] = images_per_second(lambda: sas(image, mask, fov), args.repeats, args.warmup)
    rates["standardise"] = images_per_second(lambda: standardise(image, fov), args.repeats, args.warmup)
    report = {"size": args.size, "channels": args.channels, "threads": 1, "repeats": args.repeats,
              "images_per_s": {name: round(rate, 1) for name, rate in rates.items()}}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    run_tool(main)
