"""Segment new images with a checkpoint: mask PNGs and colour overlays.

    python tools/predict.py work_dirs/unet_synthetic/best.npz -i image.png -o out/
    python tools/predict.py best.npz -i folder/ -o out/ --tile-size 256 --tta --probs
"""
from pathlib import Path

import numpy as np

from jmedseg.cli import new_parser, run_tool
from jmedseg.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}
# Overlay colours per class (BGR), background left uncoloured.
PALETTE = np.array([[0, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 0], [0, 255, 255], [255, 0, 255],
                    [255, 255, 0], [128, 128, 255]], dtype=np.uint8)


def list_inputs(path):
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return files
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return [path]


def overlay(original_bgr, labels, alpha=0.5):
    """Blend class colours over the image where a class other than background is predicted."""
    colours = PALETTE[labels % len(PALETTE)]
    out = original_bgr.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.astype(np.uint8)


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .npz checkpoint written by tools/train.py")
    parser.add_argument("-i", "--input", required=True, help="an image or a folder of images")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--tile-size", type=int, help="sliding-window tile size (default: whole image)")
    parser.add_argument("--overlap", type=float, default=0.5, help="tile overlap fraction")
    parser.add_argument("--tta", action="store_true", help="average flipped predictions")
    parser.add_argument("--threshold", type=float, help="foreground threshold (default: from the checkpoint)")
    parser.add_argument("--probs", action="store_true", help="also write foreground probability maps (8-bit PNG)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="compute device")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    import cv2
    from tqdm import tqdm

    from jmedseg.checkpoint import load_checkpoint
    from jmedseg.data import load_image, read_image_file
    from jmedseg.engine import labels_from_probs, predict_probs
    from jmedseg.io import atomic_write
    from model_zoo.backend import set_device

    files = list_inputs(args.input)
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    set_device(args.device)
    model, meta = load_checkpoint(args.checkpoint)
    cfg = meta["config"]
    in_channels, num_classes = cfg["model"]["in_channels"], cfg["model"]["num_classes"]
    threshold = args.threshold if args.threshold is not None else cfg["eval"]["threshold"]

    def save_png(path, array):
        ok, buf = cv2.imencode(".png", array)
        if not ok:
            raise DataError(f"{path}: PNG encoding failed")
        with atomic_write(path) as f:
            f.write(buf.tobytes())

    for path in tqdm(files, desc="predict", dynamic_ncols=True):
        image = load_image(path, in_channels=in_channels, preprocess=cfg["data"]["preprocess"])
        probs = predict_probs(model, image, tile_size=args.tile_size, overlap=args.overlap, tta=args.tta)
        labels = labels_from_probs(probs, threshold)
        mask = (labels * 255).astype(np.uint8) if num_classes <= 2 else labels.astype(np.uint8)
        save_png(out_dir / f"{path.stem}_mask.png", mask)
        original = read_image_file(path)
        if original.ndim == 2:
            original = np.repeat(original[..., None], 3, axis=2)
        original = cv2.cvtColor(np.ascontiguousarray(original[..., :3]), cv2.COLOR_RGB2BGR)
        if original.dtype != np.uint8:
            original = (original / max(1, original.max()) * 255).astype(np.uint8)
        save_png(out_dir / f"{path.stem}_overlay.png", overlay(original, labels))
        if args.probs:
            save_png(out_dir / f"{path.stem}_prob.png", np.round(probs[-1] * 255).astype(np.uint8))
    print(f"wrote {len(files)} mask(s) and overlay(s) to {out_dir}")
    return 0


if __name__ == "__main__":
    run_tool(main)
