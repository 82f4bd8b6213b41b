"""Write a PNG grid of augmented training samples with their mask outlines, to check a pipeline by eye.

    python tools/show_aug.py                                     # synthetic data, preset sas
    python tools/show_aug.py --data ../shared/data/DRIVE --pipeline configs/augment/sas.yaml --out grid.png

One row per image: the original, then ``--samples`` augmented copies. Each cell shows the image with
the mask's classes tinted and outlined (class 1 green, then yellow, cyan, magenta, ...) and the
outside of the field of view darkened. Without ``--out`` the grid goes to the system's temporary
folder, never into the repository.
"""
import tempfile
from pathlib import Path

import cv2
import numpy as np

from jmedseg.cli import new_parser, run_tool
from jmedseg.io import atomic_write

CLASS_COLOURS = [(0, 220, 0), (255, 220, 0), (0, 220, 255), (255, 0, 255), (255, 128, 0), (128, 128, 255)]
"""RGB colours of classes 1, 2, ... (cycled for more classes)."""


def overlay(image, mask, fov, cell):
    """An RGB uint8 ``cell x cell`` picture of one sample (letterboxed to keep its aspect ratio)."""
    height, width = image.shape[:2]
    scale = cell / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    picture = picture.reshape(size[1], size[0], -1)
    picture = np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture.copy()
    if fov is not None:
        inside = cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        picture[~inside] = picture[~inside] // 3
    if mask is not None:
        labels = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        for label in np.unique(labels):
            if label == 0:
                continue
            colour = np.array(CLASS_COLOURS[(int(label) - 1) % len(CLASS_COLOURS)], dtype=np.float32)
            region = labels == label
            picture[region] = (0.65 * picture[region] + 0.35 * colour).astype(np.uint8)
            contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(picture, contours, -1, tuple(int(c) for c in colour), 1)
    canvas = np.zeros((cell, cell, 3), np.uint8)
    top, left = (cell - size[1]) // 2, (cell - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = picture
    return canvas


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset root (default: the embedded synthetic dataset)")
    parser.add_argument("--split", default="train", help="split folder")
    parser.add_argument("--pipeline", default="sas", help="preset name, pipeline .yaml file or config fragment")
    parser.add_argument("--images", type=int, default=3, help="rows: the first N images of the split")
    parser.add_argument("--samples", type=int, default=5, help="augmented copies per image")
    parser.add_argument("--cell", type=int, default=192, help="side of one grid cell in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pipeline")
    parser.add_argument("--num-classes", type=int, default=2, help="mask classes, background included")
    parser.add_argument("--in-channels", type=int, default=3, choices=[1, 3], help="image channels")
    parser.add_argument("--preprocess", default="none", choices=["none", "green_clahe"],
                        help="input preprocessing (data.preprocess)")
    parser.add_argument("--out", help="PNG path (default: <system temp folder>/jmedseg_aug_grid.png)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from jmedseg.augment import Pipeline
    from jmedseg.data import load_split
    from jmedseg.data.synthetic import synthetic_root
    from jmedseg.errors import ConfigError

    for flag, value, low in (("--images", args.images, 1), ("--samples", args.samples, 0), ("--cell", args.cell, 16)):
        if value < low:
            raise ConfigError(f"{flag}: must be >= {low}, got {value}")
    out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "jmedseg_aug_grid.png"
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out: expected a .png path, got {out}")
    pipeline = Pipeline(args.pipeline, seed=args.seed, source="--pipeline")
    root = Path(args.data) if args.data else synthetic_root()
    dataset = load_split(root, args.split, num_classes=args.num_classes, in_channels=args.in_channels,
                         preprocess=args.preprocess, cache=False)
    rows = []
    for index in range(min(args.images, len(dataset))):
        # The pipeline runs on the image as captured; the cells show it after preprocessing, as the model sees it.
        sample = dataset.source(index)
        original = np.clip(np.rint(dataset.apply_preprocess(sample.image)), 0, 255).astype(np.uint8)
        cells = [overlay(original, sample.mask, sample.fov, args.cell)]
        for _ in range(args.samples):
            image, mask, fov = pipeline(sample.image, sample.mask, sample.fov)
            cells.append(overlay(dataset.apply_preprocess(image), mask, fov, args.cell))
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    try:
        if not ok:
            raise OSError("PNG encoding failed")
        with atomic_write(out) as f:
            f.write(png.tobytes())
    except OSError as err:
        raise ConfigError(f"--out: cannot write a PNG to {out} ({err.strerror or err})") from None
    print(f"{len(rows)} images x {1 + args.samples} columns ({pipeline!r}): {out}")
    return 0


if __name__ == "__main__":
    run_tool(main)
