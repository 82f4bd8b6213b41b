"""A small generated retinal-vessel dataset, used when no dataset folder is configured.

Each image is an RGB crop of a synthetic fundus: a dark background outside a circular field of view,
a reddish-orange fundus with an uneven illumination, texture and noise, an optional bright optic disc,
a few dark blotches, and a tree of dark-red vessels that branch and thin from about 4 px to 1 px.
Vessels are drawn on a 4x supersampled canvas and downsampled with area averaging, so their edges
are anti-aliased; the mask marks pixels at least half covered by a vessel, inside the FOV. Trees are
redrawn until the vessels cover 8-15% of the image.

The uneven illumination, varying vessel contrast and dark distractors make thresholding the raw
intensity a poor segmenter: on the default 32 images the best single global threshold of the green
channel (the best channel) reaches a Dice of 0.45 inside the FOV (0.50 with the best threshold chosen
per image), while a fixed local background-subtraction filter already reaches about 0.72, so the
vessels are learnable from local shape and contrast.

Generation is deterministic: the same arguments give byte-identical PNG files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from jmedseg.errors import DataError

__all__ = ["SYNTHETIC_NAME", "generate_synthetic", "synthesize_sample", "synthetic_root"]

SYNTHETIC_NAME = "synthetic_vessels_v1"
DEFAULT_TRAIN = 24
DEFAULT_TEST = 8
DEFAULT_SIZE = 128
DEFAULT_SEED = 0

VESSEL_FRACTION_RANGE = (0.08, 0.15)

_SUPERSAMPLE = 4
_MAX_TREE_ATTEMPTS = 100
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6]


def _grow_vessel(
    rng: np.random.Generator, segments: list, start: np.ndarray, angle: float, width: float, depth: int, scale: float
) -> None:
    """Append ``(points, width, depth)`` polylines of one vessel and, recursively, of its branches."""
    length = scale * rng.uniform(0.16, 0.3) * (0.8**depth)
    step = max(scale / 64.0, 1.0)
    n_steps = max(int(length / step), 2)
    points = [start]
    point = start.astype(np.float64)
    turn = rng.normal(0.0, 0.05)
    for _ in range(n_steps):
        turn = 0.75 * turn + rng.normal(0.0, 0.04)
        angle += turn
        point = point + step * np.array([np.cos(angle), np.sin(angle)])
        points.append(point)
    segments.append((np.array(points), width, depth))
    child_width = width * rng.uniform(0.68, 0.8)
    if child_width < 0.9 or depth >= 5:
        return
    # Bifurcation at the end, plus a side branch somewhere along the vessel.
    spread = rng.uniform(0.35, 0.8)
    _grow_vessel(rng, segments, point, angle + spread * rng.uniform(0.6, 1.0), child_width, depth + 1, scale)
    other_width = max(child_width * rng.uniform(0.75, 1.0), 0.9)
    _grow_vessel(rng, segments, point, angle - spread * rng.uniform(0.6, 1.0), other_width, depth + 1, scale)
    if rng.random() < 0.7:
        at = points[rng.integers(len(points) // 3, len(points))]
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.4)
        _grow_vessel(rng, segments, at, angle + side, max(width * 0.55, 0.9), depth + 2, scale)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise rescaled to unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _draw_vessel_tree(
    rng: np.random.Generator, size: int, centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the vessels around a random optic disc position.

    Returns:
        ``(disc, coverage, darkness)``: disc centre (x, y), per-pixel vessel coverage in [0, 1] and
        per-pixel vessel contrast (coverage times the vessel's contrast).
    """
    big = size * _SUPERSAMPLE
    disc_angle = rng.uniform(0, 2 * np.pi)
    disc = centre + rng.uniform(0.15, 0.3) * size * np.array([np.cos(disc_angle), np.sin(disc_angle)])
    segments: list = []
    n_roots = int(rng.integers(3, 6))
    for k in range(n_roots):
        angle = 2 * np.pi * (k + rng.uniform(-0.3, 0.3)) / n_roots
        start = disc + rng.uniform(0.0, 0.03) * size * np.array([np.cos(angle), np.sin(angle)])
        _grow_vessel(rng, segments, start, angle, rng.uniform(2.6, 4.0), 0, float(size))

    coverage_canvas = np.zeros((big, big), np.uint8)
    contrast_canvas = np.zeros((big, big), np.uint8)
    for points, width, _ in segments:
        # Thin vessels are fainter, as in real fundus images.
        contrast = rng.uniform(0.3, 0.65) * (0.45 + 0.55 * min(width / 3.0, 1.0))
        polyline = np.round(points * _SUPERSAMPLE).astype(np.int32).reshape(-1, 1, 2)
        thickness = max(int(round(width * _SUPERSAMPLE)), 1)
        cv2.polylines(coverage_canvas, [polyline], False, 255, thickness, cv2.LINE_8)
        cv2.polylines(contrast_canvas, [polyline], False, int(round(255 * contrast)), thickness, cv2.LINE_8)
    coverage = cv2.resize(coverage_canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    darkness = cv2.resize(contrast_canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return disc, coverage, darkness


def synthesize_sample(rng: np.random.Generator, size: int = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one synthetic fundus crop.

    Args:
        rng: random generator (consumed).
        size: image side in pixels.

    Returns:
        ``(image, mask, fov)``: uint8 RGB ``size x size x 3``, uint8 vessel mask in {0, 255},
        uint8 field of view in {0, 255}.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5

    centre = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    radius = size * rng.uniform(0.5, 0.58)
    distance = np.hypot(xx - centre[0], yy - centre[1])
    fov = distance <= radius

    # Redraw the tree until its size is in range (after the last attempt its size is accepted as is).
    for _ in range(_MAX_TREE_ATTEMPTS):
        disc, coverage, darkness = _draw_vessel_tree(rng, size, centre)
        fraction = float(((coverage >= 0.5) & fov).mean())
        if VESSEL_FRACTION_RANGE[0] <= fraction <= VESSEL_FRACTION_RANGE[1]:
            break

    slope = rng.uniform(-0.45, 0.45, 2)
    illumination = (
        1.0
        + slope[0] * (xx - centre[0]) / size
        + slope[1] * (yy - centre[1]) / size
        - rng.uniform(0.2, 0.45) * (distance / radius) ** 2
        + 0.08 * _smooth_noise(rng, size, size / 16)
        + 0.05 * _smooth_noise(rng, size, 1.2)
    )
    brightness = np.ones((size, size, 3), np.float32)
    if rng.random() < 0.8:
        disc_glow = np.exp(-((xx - disc[0]) ** 2 + (yy - disc[1]) ** 2) / (2 * (size * rng.uniform(0.04, 0.07)) ** 2))
        brightness += rng.uniform(0.3, 0.6) * disc_glow[..., None] * np.array([0.5, 1.2, 1.0], np.float32)
    for _ in range(int(rng.integers(2, 6))):
        # Dark blotches (haemorrhage-like) that a plain intensity threshold confuses with vessels.
        spot = rng.uniform(0.1, 0.9, 2) * size
        sigma = rng.uniform(1.5, 4.0)
        blob = np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * sigma**2))
        brightness -= rng.uniform(0.2, 0.45) * blob[..., None]

    base_colour = np.array([rng.uniform(170, 225), rng.uniform(70, 110), rng.uniform(30, 60)], np.float32)
    # Vessels absorb mostly green and blue light, so they are darkest in the green channel.
    vessel_absorption = np.array([0.55, 1.0, 0.8], np.float32)
    image = base_colour * (illumination[..., None] * brightness) * (1.0 - darkness[..., None] * vessel_absorption)
    image += rng.normal(0.0, rng.uniform(3.0, 8.0), image.shape)
    soft_fov = cv2.GaussianBlur(fov.astype(np.float32), (0, 0), 0.7)[..., None]
    background = rng.uniform(0, 8) + rng.normal(0.0, 1.5, image.shape)
    image = soft_fov * image + (1.0 - soft_fov) * background
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    mask = ((coverage >= 0.5) & fov).astype(np.uint8) * 255
    return image, mask, fov.astype(np.uint8) * 255


def generate_synthetic(
    out_dir: str | Path,
    n_train: int = DEFAULT_TRAIN,
    n_test: int = DEFAULT_TEST,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Write a synthetic dataset in the standard layout (``{train,test}/{images,masks,fov}/NN.png``).

    Image ``i`` (counted over train then test, so names are unique across splits) is drawn from
    ``numpy.random.default_rng([seed, i])``; the same arguments give byte-identical files.

    Args:
        out_dir: folder to create or fill.
        n_train, n_test: number of images per split (``n_test=0`` writes no test split).
        size: image side in pixels.
        seed: base seed.

    Returns:
        ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir)
    digits = max(2, len(str(n_train + n_test - 1)))
    for index in range(n_train + n_test):
        split = "train" if index < n_train else "test"
        image, mask, fov = synthesize_sample(np.random.default_rng([seed, index]), size)
        name = f"{index:0{digits}d}.png"
        for kind, array in (("images", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), ("masks", mask), ("fov", fov)):
            folder = out_dir / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(folder / name), array, _PNG_PARAMS):
                raise OSError(f"{folder / name}: cannot write file")
    return out_dir


def _unwritable(folder: Path, exc: OSError) -> str:
    reason = exc.strerror or exc
    return f"{folder}: cannot write the synthetic dataset ({reason}); set JMEDSEG_CACHE to a writable folder"


def _cache_dir() -> Path:
    env = os.environ.get("JMEDSEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jmedseg"


def synthetic_root() -> Path:
    """Return the default synthetic dataset folder, generating it on first use.

    The folder is ``$JMEDSEG_CACHE/synthetic_vessels_v1`` (or ``~/.cache/jmedseg/...``): 24 train and
    8 test images of 128x128, seed 0. It is generated in a temporary folder beside it and renamed into
    place, so concurrent processes never see a partial dataset; if another process finished first,
    its copy is used. The version suffix changes whenever the generator does.
    """
    target = _cache_dir() / SYNTHETIC_NAME
    if target.is_dir():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{SYNTHETIC_NAME}.", dir=target.parent))
    except OSError as exc:
        raise DataError(_unwritable(target.parent, exc)) from None
    try:
        generate_synthetic(staging, DEFAULT_TRAIN, DEFAULT_TEST, DEFAULT_SIZE, DEFAULT_SEED)
        staging.chmod(0o755)  # mkdtemp creates the folder private to its owner
        os.rename(staging, target)
    except OSError as exc:
        if not target.is_dir():  # otherwise another process renamed its copy into place first
            raise DataError(_unwritable(target.parent, exc)) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
