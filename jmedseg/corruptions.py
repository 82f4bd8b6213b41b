"""Robustness benchmark: test images corrupted at five severities, deterministically.

``corrupt(sample, name, severity, seed)`` applies one corruption of :data:`CORRUPTIONS` to an 8-bit
sample; :class:`CorruptedDataset` applies it on access to the images as captured
(:meth:`jmedseg.data.dataset.SegDataset.source`), then the dataset's preprocessing (e.g.
``green_clahe``) and standardisation, ready for :func:`jmedseg.engine.evaluate`: a corruption stands
for other capture conditions, which reach the model through the same preprocessing as any new image.
:func:`run_benchmark` scores every corruption and severity.

Severities (the transforms are those of :mod:`jmedseg.augment`; "side" is the shorter image side):

==============  ============================================  ===============================
corruption      parameter                                     severity 1, 2, 3, 4, 5
==============  ============================================  ===============================
brightness      shift, fraction of 255, random sign           0.1, 0.2, 0.3, 0.4, 0.5
contrast        factor about the image mean                   0.8, 0.65, 0.5, 0.35, 0.2
gamma           exponent g, or 1/g (random)                   1.25, 1.5, 1.8, 2.2, 2.8
hue_saturation  hue shift (degrees, random sign), saturation  8/0.85, 16/0.7, 24/0.55,
                factor                                        32/0.4, 45/0.25
blur            Gaussian sigma, pixels                        0.5, 1, 1.5, 2, 3
noise           Gaussian standard deviation, 8-bit units      4, 8, 16, 24, 36
jpeg            quality                                       60, 40, 25, 15, 8
clahe           clip limit (8 x 8 tiles)                      1.5, 2.5, 4, 6, 10
rotate          angle, degrees, random sign                   5, 10, 15, 25, 35
scale           zoom factor s, or 1/s (random)                1.1, 1.2, 1.35, 1.5, 1.75
shear           horizontal shear, degrees, random sign        5, 10, 15, 20, 30
elastic         RMS displacement / smoothing sigma, fraction  0.005, 0.01, 0.015, 0.02, 0.03
                of the side                                   (sigma 0.04 at every severity)
perspective     corner shift, fraction of the side, random    0.02, 0.04, 0.06, 0.08, 0.12
                directions
screen_photo    perspective / moire depth / cast / blur /     see :data:`SCREEN_PHOTO_LEVELS`
                noise of :func:`jmedseg.augment.screen_photo`
==============  ============================================  ===============================

Conventions:

* Randomness (signs, directions, noise, deformation fields) comes from
  ``numpy.random.default_rng([seed, crc32(sample name), index of the corruption])``: it is fixed per
  image and corruption and does not depend on the severity, so a higher severity is the same
  corruption, stronger.
* Photometric corruptions change only the image (a gray image is unchanged by hue_saturation).
* Geometric corruptions (rotate, scale, shear, elastic, perspective, screen_photo) move mask and
  FOV with the image (nearest-neighbour) and fill what comes from outside the image with 0
  (black image, background mask). They always return a FOV: the input's (or, without one, the
  whole image) warped the same way, so pixels from outside the image are left out of the scores
  wherever the FOV is used (``eval.use_fov``).
"""

from __future__ import annotations

import difflib
import math
import zlib
from typing import Callable, Iterable, Sequence

import numpy as np

from jmedseg import augment as aug
from jmedseg.data.dataset import Sample, require_source_images, standardise
from jmedseg.errors import ConfigError, DataError

__all__ = [
    "CORRUPTIONS",
    "GEOMETRIC_CORRUPTIONS",
    "SCREEN_PHOTO_LEVELS",
    "SEVERITIES",
    "CorruptedDataset",
    "corrupt",
    "format_benchmark",
    "parse_corruptions",
    "parse_severities",
    "run_benchmark",
]

SEVERITIES = (1, 2, 3, 4, 5)

SCREEN_PHOTO_LEVELS = (
    {"perspective": 0.02, "moire": 0.04, "period": 16.0, "cast": 0.05, "blur": 0.5, "noise": 2.0},
    {"perspective": 0.04, "moire": 0.07, "period": 14.0, "cast": 0.1, "blur": 0.8, "noise": 4.0},
    {"perspective": 0.06, "moire": 0.1, "period": 12.0, "cast": 0.15, "blur": 1.1, "noise": 6.0},
    {"perspective": 0.08, "moire": 0.14, "period": 10.0, "cast": 0.2, "blur": 1.5, "noise": 9.0},
    {"perspective": 0.1, "moire": 0.2, "period": 8.0, "cast": 0.25, "blur": 2.0, "noise": 12.0},
)
"""Arguments of :func:`jmedseg.augment.screen_photo` at severities 1 to 5."""

_LEVELS = {
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.8, 0.65, 0.5, 0.35, 0.2),
    "gamma": (1.25, 1.5, 1.8, 2.2, 2.8),
    "hue_saturation": ((8.0, 0.85), (16.0, 0.7), (24.0, 0.55), (32.0, 0.4), (45.0, 0.25)),
    "blur": (0.5, 1.0, 1.5, 2.0, 3.0),
    "noise": (4.0, 8.0, 16.0, 24.0, 36.0),
    "jpeg": (60, 40, 25, 15, 8),
    "clahe": (1.5, 2.5, 4.0, 6.0, 10.0),
    "rotate": (5.0, 10.0, 15.0, 25.0, 35.0),
    "scale": (1.1, 1.2, 1.35, 1.5, 1.75),
    "shear": (5.0, 10.0, 15.0, 20.0, 30.0),
    "elastic": (0.005, 0.01, 0.015, 0.02, 0.03),
    "perspective": (0.02, 0.04, 0.06, 0.08, 0.12),
    "screen_photo": SCREEN_PHOTO_LEVELS,
}
_ELASTIC_SIGMA = 0.04  # smoothing of the elastic field, fraction of the shorter side

CORRUPTIONS = tuple(_LEVELS)
"""Corruption names, in benchmark order."""

GEOMETRIC_CORRUPTIONS = ("rotate", "scale", "shear", "elastic", "perspective", "screen_photo")
"""Corruptions that move mask and FOV with the image."""


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _photometric(name: str, image: np.ndarray, level, rng: np.random.Generator) -> np.ndarray:
    if name == "brightness":
        return aug.adjust_brightness(image, _sign(rng) * 255.0 * level)
    if name == "contrast":
        return aug.adjust_contrast(image, level)
    if name == "gamma":
        return aug.adjust_gamma(image, level if _sign(rng) > 0 else 1.0 / level)
    if name == "hue_saturation":
        hue, saturation = level
        return aug.adjust_hue_saturation(image, _sign(rng) * hue, saturation)
    if name == "blur":
        return aug.gaussian_blur(image, level)
    if name == "noise":
        return aug.gaussian_noise(image, level, rng)
    if name == "jpeg":
        return aug.jpeg_compress(image, level)
    return aug.apply_clahe(image, level, 8)


def _geometric(name: str, image, mask, fov, level, rng: np.random.Generator):
    if name == "screen_photo":
        return aug.screen_photo(image, mask, fov, rng, **level)
    shape = image.shape
    if name == "elastic":
        side = min(shape[:2])
        dx, dy = aug.elastic_field(rng, shape, level * side, _ELASTIC_SIGMA * side)
        return aug.remap(image, mask, fov, dx, dy, "constant")
    if name == "perspective":
        sides = np.array([shape[1] - 1, shape[0] - 1], dtype=np.float64)
        offsets = rng.uniform(-1.0, 1.0, (4, 2)) * level * sides
        return aug.warp_perspective(image, mask, fov, aug.perspective_matrix(shape, offsets), "constant")
    if name == "rotate":
        matrix = aug.affine_matrix(shape, angle=_sign(rng) * level)
    elif name == "scale":
        matrix = aug.affine_matrix(shape, scale=level if _sign(rng) > 0 else 1.0 / level)
    else:
        matrix = aug.affine_matrix(shape, shear=_sign(rng) * level)
    return aug.warp_affine(image, mask, fov, matrix, "constant")


def _check_name(name: str) -> None:
    if name not in _LEVELS:
        close = difflib.get_close_matches(str(name), CORRUPTIONS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(CORRUPTIONS)}"
        raise ConfigError(f"corruption {name!r} is unknown ({hint})")


def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ConfigError(f"corruption severity must be an integer from 1 to 5, got {severity!r}")


def corrupt(sample: Sample, name: str, severity: int, seed: int = 0) -> Sample:
    """Apply corruption ``name`` at ``severity`` (1-5) to an 8-bit sample, deterministically.

    Args:
        sample: image ``H x W x C`` in the 8-bit range (not standardised), mask and fov as in
            :class:`~jmedseg.data.dataset.Sample` (either may be None).
        name: one of :data:`CORRUPTIONS`.
        severity: 1 (mild) to 5 (severe); see the table in the module docstring.
        seed: benchmark seed, combined with the sample's name and the corruption.

    Returns:
        A new :class:`~jmedseg.data.dataset.Sample` with the same name: uint8 image, mask with its
        own dtype, fov as described in the module docstring.

    Raises:
        ConfigError: unknown corruption (with the closest name) or severity outside 1-5.
        DataError: an image outside the 8-bit range (a standardised one) or mismatched shapes.
    """
    _check_name(name)
    _check_severity(severity)
    mask_dtype = None if sample.mask is None else sample.mask.dtype
    image, mask, fov = aug.prepare(sample.image, sample.mask, sample.fov)
    rng = np.random.default_rng([seed, zlib.crc32(sample.name.encode("utf-8")), CORRUPTIONS.index(name)])
    level = _LEVELS[name][severity - 1]
    if name in GEOMETRIC_CORRUPTIONS:
        if fov is None:
            fov = np.ones(image.shape[:2], dtype=bool)
        image, mask, fov = _geometric(name, image, mask, fov, level, rng)
    else:
        image = _photometric(name, image, level, rng)
    if mask is not None:
        mask = mask.astype(mask_dtype, copy=False)
    return Sample(sample.name, image, mask, fov)


class CorruptedDataset(Sequence[Sample]):
    """Standardised corrupted samples of a dataset, made on access (nothing is cached).

    Item ``i`` is ``corrupt(dataset.source(i), name, severity, seed)`` with the dataset's
    preprocessing applied to its image and the result standardised inside its FOV
    (:func:`jmedseg.data.dataset.standardise`), like an uncorrupted ``dataset[i]``.

    Args:
        dataset: a dataset with ``source(index)`` and ``apply_preprocess(image)`` methods
            (:class:`~jmedseg.data.dataset.SegDataset`).
        name, severity, seed: see :func:`corrupt`.
    """

    def __init__(self, dataset, name: str, severity: int, seed: int = 0) -> None:
        _check_name(name)
        _check_severity(severity)
        require_source_images(dataset, f"{getattr(dataset, 'description', 'dataset')}: the corruption benchmark")
        self.dataset, self.name, self.severity, self.seed = dataset, name, severity, seed
        self.description = f"{getattr(dataset, 'description', 'dataset')} ({name}, severity {severity})"

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("CorruptedDataset does not support slices")
        sample = corrupt(self.dataset.source(index), self.name, self.severity, self.seed)
        return sample._replace(image=standardise(self.dataset.apply_preprocess(sample.image), sample.fov))


def parse_corruptions(text: str) -> list[str]:
    """``"all"`` or comma-separated names -> list of names (order kept, duplicates dropped).

    Raises:
        ConfigError: an unknown or empty name, with the closest valid name.
    """
    if text.strip() == "all":
        return list(CORRUPTIONS)
    names: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            raise ConfigError(f"--corruptions: empty name in {text!r} (use 'all' or names like blur,noise)")
        try:
            _check_name(name)
        except ConfigError as exc:
            raise ConfigError(f"--corruptions: {exc}") from None
        if name not in names:
            names.append(name)
    return names


def parse_severities(text: str) -> list[int]:
    """Comma-separated severities such as ``"1,3,5"`` -> sorted unique list of ints in 1-5.

    Raises:
        ConfigError: a value that is not an integer from 1 to 5.
    """
    severities = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) not in SEVERITIES:
            raise ConfigError(f"--severities: expected integers from 1 to 5 such as 1,3,5, got {text!r}")
        severities.add(int(part))
    return sorted(severities)


def run_benchmark(
    dataset,
    score: Callable[[Sequence[Sample]], float],
    names: Iterable[str] = CORRUPTIONS,
    severities: Iterable[int] = SEVERITIES,
    seed: int = 0,
) -> tuple[dict[str, dict[int, float]], float]:
    """Score a model on every corruption and severity.

    Args:
        dataset: test dataset with ``source(index)`` and ``apply_preprocess`` methods (a SegDataset).
        score: maps a dataset of standardised samples to one number (e.g. pooled Dice of
            :func:`jmedseg.engine.evaluate`).
        names: corruptions to run.
        severities: severities to run.
        seed: see :func:`corrupt`.

    Returns:
        ``({name: {severity: score}}, mean of all scores)``; the mean is nan when nothing ran.
    """
    severities = list(severities)
    table = {
        name: {severity: float(score(CorruptedDataset(dataset, name, severity, seed))) for severity in severities}
        for name in names
    }
    values = [value for row in table.values() for value in row.values()]
    return table, float(np.mean(values)) if values else math.nan


def format_benchmark(table: dict[str, dict[int, float]], mean: float, metric: str = "dice") -> str:
    """A title, a fixed-width table (a row per corruption: each severity, then the row mean) and the overall mean."""
    severities = sorted({severity for row in table.values() for severity in row})
    lines = [
        f"{metric} by corruption and severity",
        f"{'corruption':<16}" + "".join(f"{s:>9}" for s in severities) + f"{'mean':>9}",
    ]
    for name, row in table.items():
        cells = "".join(f"{row[s]:>9.4f}" if s in row else f"{'-':>9}" for s in severities)
        row_mean = float(np.mean(list(row.values()))) if row else math.nan
        lines.append(f"{name:<16}{cells}{row_mean:>9.4f}")
    lines.append(f"{'mean':<16}{'':>{9 * len(severities)}}{mean:>9.4f}")
    return "\n".join(lines)
