"""Convert a public dataset release into the jmedseg folder layout.

    python tools/prepare_data.py drive  SRC OUT                   # official DRIVE release
    python tools/prepare_data.py kvasir SRC OUT [--test-count 120] # Kvasir-SEG release

The result is ``OUT/{train,test}/{images,masks}/<name>`` (plus ``fov/`` and, when the release has
it, ``test/masks_2nd/`` for DRIVE). Masks are written as 8-bit PNG with values 0 and 255: the source
mask is converted to gray and thresholded at 128, which turns palette GIF and JPEG masks into clean
binary masks.

* DRIVE: ``SRC/training/{images/NN_training.tif, 1st_manual/NN_manual1.gif, mask/NN_training_mask.gif}``
  and ``SRC/test/{images/NN_test.tif, 1st_manual/NN_manual1.gif, mask/NN_test_mask.gif}`` (``testing/``
  is accepted for ``test/``; the optional ``2nd_manual/NN_manual2.gif`` goes to ``test/masks_2nd/``).
  Images become RGB PNG files named ``NN.png``; the official split is kept (train 21-40, test 01-20).
* Kvasir-SEG: ``SRC/images/<id>.jpg`` and ``SRC/masks/<id>.jpg``. Sorted by name, the last
  ``--test-count`` images form the test split. Images are copied byte for byte (JPEG stays JPEG).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jmedseg.errors import ConfigError, DataError, JMedSegError

_KVASIR_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read image file ({exc})") from None
    return image


def _binary_mask(path: Path) -> Image.Image:
    """Gray version of a mask file thresholded at 128, as an 8-bit 0/255 image."""
    gray = np.asarray(_open(path).convert("L"))
    return Image.fromarray(np.where(gray >= 128, 255, 0).astype(np.uint8), mode="L")


def _check_size(mask: Image.Image, mask_path: Path, size: tuple[int, int], image_path: Path) -> None:
    if mask.size != size:
        raise DataError(
            f"{mask_path}: size {mask.size[0]}x{mask.size[1]} does not match image {image_path.name} "
            f"({size[0]}x{size[1]})"
        )


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found")
    return path


def _prepare_output(out: Path, splits: tuple[str, ...], overwrite: bool) -> None:
    for split in splits:
        folder = out / split
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise DataError(f"{folder}: output split folder is not empty (pass --overwrite to replace it)")
        if folder.exists() and overwrite:
            shutil.rmtree(folder)


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.save(path, format="PNG")
    except OSError as exc:
        raise DataError(f"{path}: cannot write file ({exc})") from None


def convert_drive(src: Path, out: Path, overwrite: bool = False) -> dict[str, int]:
    """Convert the official DRIVE release; returns the number of images written per split."""
    _require_dir(src, "DRIVE source")
    test_dir = src / "testing" if (src / "testing").is_dir() and not (src / "test").is_dir() else src / "test"
    layouts = {
        "train": (_require_dir(src / "training", "DRIVE training"), "training"),
        "test": (_require_dir(test_dir, "DRIVE test"), "test"),
    }
    jobs = []
    for split, (split_dir, tag) in layouts.items():
        image_dir = _require_dir(split_dir / "images", "DRIVE images")
        manual_dir = _require_dir(split_dir / "1st_manual", "DRIVE 1st_manual")
        fov_dir = _require_dir(split_dir / "mask", "DRIVE mask")
        second_dir = split_dir / "2nd_manual"
        pattern = re.compile(rf"^(\d+)_{tag}\.tiff?$", re.IGNORECASE)
        image_paths = {m.group(1): path for path in sorted(image_dir.iterdir()) if (m := pattern.match(path.name))}
        if not image_paths:
            raise DataError(f"{image_dir}: no DRIVE images named NN_{tag}.tif")
        for number, image_path in sorted(image_paths.items()):
            manual_path = manual_dir / f"{number}_manual1.gif"
            fov_path = fov_dir / f"{number}_{tag}_mask.gif"
            for path in (manual_path, fov_path):
                if not path.is_file():
                    raise DataError(f"{path}: file not found (expected for image {image_path.name})")
            second_path = second_dir / f"{number}_manual2.gif"
            second = second_path if second_path.is_file() else None
            jobs.append((split, number, image_path, manual_path, fov_path, second))
    _prepare_output(out, tuple(layouts), overwrite)
    counts = {split: 0 for split in layouts}
    for split, number, image_path, manual_path, fov_path, second_path in jobs:
        image = _open(image_path).convert("RGB")
        outputs = [("masks", manual_path), ("fov", fov_path)] + ([("masks_2nd", second_path)] if second_path else [])
        _save_png(image, out / split / "images" / f"{number}.png")
        for kind, path in outputs:
            mask = _binary_mask(path)
            _check_size(mask, path, image.size, image_path)
            _save_png(mask, out / split / kind / f"{number}.png")
        counts[split] += 1
    return counts


def _list_by_stem(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in _KVASIR_EXTENSIONS:
            if path.stem in files:
                raise DataError(f"{path}: base name '{path.stem}' is used by two files")
            files[path.stem] = path
    return files


def convert_kvasir(src: Path, out: Path, test_count: int = 120, overwrite: bool = False) -> dict[str, int]:
    """Convert the Kvasir-SEG release (sorted names, last ``test_count`` to test); returns counts per split."""
    _require_dir(src, "Kvasir-SEG source")
    image_dir = _require_dir(src / "images", "Kvasir-SEG images")
    mask_dir = _require_dir(src / "masks", "Kvasir-SEG masks")
    images, masks = _list_by_stem(image_dir), _list_by_stem(mask_dir)
    if not images:
        raise DataError(f"{image_dir}: no .jpg images")
    for unpaired, problem in (
        (set(images) - set(masks), "no mask for image(s)"),
        (set(masks) - set(images), "mask(s) without image"),
    ):
        if unpaired:
            listed = sorted(unpaired)
            shown = ", ".join(listed[:5]) + (f", ... ({len(listed)} in total)" if len(listed) > 5 else "")
            raise DataError(f"{mask_dir}: {problem} {shown}")
    names = sorted(images)
    if not 0 < test_count < len(names):
        raise ConfigError(
            f"--test-count: must be between 1 and {len(names) - 1} for {len(names)} images, got {test_count}"
        )
    _prepare_output(out, ("train", "test"), overwrite)
    counts = {"train": 0, "test": 0}
    for position, name in enumerate(names):
        split = "train" if position < len(names) - test_count else "test"
        image_path = images[name]
        size = _open(image_path).size
        mask = _binary_mask(masks[name])
        _check_size(mask, masks[name], size, image_path)
        target = out / split / "images" / (name + image_path.suffix.lower())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image_path, target)
        _save_png(mask, out / split / "masks" / f"{name}.png")
        counts[split] += 1
    return counts


def build_parser() -> argparse.ArgumentParser:
    summary, _, details = __doc__.partition("\n")
    parser = argparse.ArgumentParser(
        description=summary, epilog=details, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="dataset", required=True, metavar="{drive,kvasir}")
    drive = commands.add_parser("drive", help="official DRIVE release (training/ and test/ folders)")
    kvasir = commands.add_parser("kvasir", help="Kvasir-SEG release (images/ and masks/ folders)")
    for command in (drive, kvasir):
        command.add_argument("src", type=Path, help="folder of the unpacked release")
        command.add_argument("out", type=Path, help="output dataset folder")
        command.add_argument("--overwrite", action="store_true", help="replace existing output split folders")
    kvasir.add_argument(
        "--test-count", type=int, default=120, help="images (the last by sorted name) in the test split (default: 120)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tool; bad input is printed as ``error: <message>`` and gives exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.dataset == "drive":
            counts = convert_drive(args.src, args.out, overwrite=args.overwrite)
        else:
            counts = convert_kvasir(args.src, args.out, test_count=args.test_count, overwrite=args.overwrite)
    except JMedSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {counts['train']} train and {counts['test']} test images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
