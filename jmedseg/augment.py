"""Training augmentation with OpenCV and NumPy: joint geometric transforms and image-only photometric ones.

A :class:`Pipeline` is built from a list of ops written like YAML, each with a probability and
its ranges, e.g. ``[{name: rotate, p: 0.5, limit: 30}, {name: gamma, p: 0.3, range: [0.7, 1.5]}]``.
:data:`OPS` lists the op names; :data:`SAS_PIPELINE` is the strong preset (``configs/augment/sas.yaml``).

What the ops work on
--------------------
Photometric ops are defined on 8-bit values, so a pipeline runs on the image as captured, before
the dataset's preprocessing and the per-image standardisation of :mod:`jmedseg.data`
(:meth:`jmedseg.data.dataset.SegDataset.source`, then ``apply_preprocess`` and
:func:`jmedseg.data.dataset.standardise`, as :class:`jmedseg.data.sampler.TrainSampler` does):

* ``image``: ``H x W x C`` with ``C`` 1 (gray) or 3 (RGB), uint8 or any real dtype holding values
  in [0, 255] (float32 for 16-bit sources), which is rounded to uint8 first. Returned as uint8.
* ``mask``: ``H x W`` integer class indices in 0..255, or None; returned with its own dtype.
* ``fov``: ``H x W`` bool field of view, or None; returned as bool (None stays None).

Because the sampler standardises each channel of each image afterwards, a global per-channel affine
change (brightness, contrast, a uniform colour cast) survives only where it clips at 0 or 255 and
through 8-bit rounding, exactly as it would for a real test image; gamma, hue/saturation, CLAHE,
blur, noise, JPEG and moire are not undone. With ``data.preprocess: green_clahe`` the ops see the
stored RGB image and CLAHE runs after them on its green channel, which evens out much of a
brightness, contrast or gamma change but amplifies noise.

Geometry and borders
--------------------
Geometric ops move image, mask and FOV with one coordinate map: bilinear for the image,
nearest-neighbour for mask and FOV, so a mask keeps its label set. Where a pixel's source lies
outside the image:

* ``border: reflect`` (default): image and mask are mirrored (``cv2.BORDER_REFLECT_101``), so the
  mirrored content keeps correct labels;
* ``border: constant``: image 0 (black) and mask 0 (background);
* the FOV is always 0 there, so such pixels never count where the FOV is used. A sample without a
  FOV keeps ``fov=None``.

Angles are in degrees, positive counter-clockwise (OpenCV's convention); lengths are in pixels of
the image the pipeline sees (native resolution in ``data.mode: patch``, ``data.image_size`` in
``data.mode: resize``) unless stated as a fraction of the side.

Randomness and reproducibility
------------------------------
Every op draws ``u = rng.random()`` and runs when ``u < p``, then draws its parameters from the same
``numpy.random.Generator``; a pipeline given equal seeds (or generator states) produces identical
outputs. :meth:`Pipeline.state_dict` captures the generator.

The deterministic transforms (:func:`warp_affine`, :func:`gaussian_blur`, ...) are public building
blocks, used by :mod:`jmedseg.corruptions`; they take the arrays in the pipeline's working form:
image uint8 ``H x W x C``, mask uint8 ``H x W`` or None, fov bool ``H x W`` or None.
"""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence

import cv2
import numpy as np
import yaml

from jmedseg.errors import ConfigError, DataError

__all__ = [
    "BORDERS",
    "OPS",
    "PRESETS",
    "SAS_PIPELINE",
    "Pipeline",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_gamma",
    "adjust_hue_saturation",
    "affine_matrix",
    "apply_clahe",
    "crop",
    "elastic_field",
    "flip",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg_compress",
    "perspective_matrix",
    "prepare",
    "remap",
    "resolve_ops",
    "rot90",
    "screen_photo",
    "warp_affine",
    "warp_perspective",
]

BORDERS = ("reflect", "constant")
"""Border handling of the geometric ops; see the module docstring."""

_BORDER_MODES = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}
_YAML_SUFFIXES = (".yaml", ".yml")

Arrays = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]


# ----------------------------------------------------------------------------- deterministic transforms


def _with_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """OpenCV drops a trailing channel axis of length 1; put it back."""
    return array.reshape(array.shape[0], array.shape[1], channels)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _geometric(
    image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray | None, warp: Callable, border: str
) -> Arrays:
    """Apply ``warp(array, interpolation, border_mode)`` to image (bilinear), mask and fov (nearest, fov border 0)."""
    mode = _BORDER_MODES[border]
    image = _with_channels(warp(image, cv2.INTER_LINEAR, mode), image.shape[2])
    if mask is not None:
        mask = warp(mask, cv2.INTER_NEAREST, mode)
    if fov is not None:
        fov = warp(fov.view(np.uint8), cv2.INTER_NEAREST, cv2.BORDER_CONSTANT).view(bool)
    return image, mask, fov


def flip(image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray | None, horizontal: bool) -> Arrays:
    """Mirror left-right (``horizontal=True``) or top-bottom."""
    code = 1 if horizontal else 0
    return _geometric(image, mask, fov, lambda array, _, __: cv2.flip(array, code), "constant")


def rot90(image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray | None, turns: int) -> Arrays:
    """Rotate by ``turns`` quarter turns counter-clockwise (the output is W x H for odd turns)."""
    turns %= 4
    if turns == 0:
        return image, mask, fov
    code = (cv2.ROTATE_90_COUNTERCLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_CLOCKWISE)[turns - 1]
    return _geometric(image, mask, fov, lambda array, _, __: cv2.rotate(array, code), "constant")


def affine_matrix(
    shape: tuple[int, ...],
    angle: float = 0.0,
    scale: float = 1.0,
    shear: float = 0.0,
    translate: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The 2 x 3 map from source to output pixel coordinates of a rotation, scale and shear about the centre.

    Args:
        shape: image shape (``H, W, ...``).
        angle: rotation in degrees, counter-clockwise.
        scale: zoom factor (> 1 enlarges the content).
        shear: horizontal shear angle in degrees.
        translate: ``(dx, dy)`` shift in pixels applied last.

    Returns:
        float64 2 x 3 matrix for :func:`warp_affine`.
    """
    height, width = shape[:2]
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    radians = math.radians(angle)
    # y points down in images, so this is counter-clockwise on screen (cv2.getRotationMatrix2D).
    rotation = np.array([[math.cos(radians), math.sin(radians)], [-math.sin(radians), math.cos(radians)]])
    shearing = np.array([[1.0, math.tan(math.radians(shear))], [0.0, 1.0]])
    linear = scale * rotation @ shearing
    offset = centre + np.asarray(translate, dtype=np.float64) - linear @ centre
    return np.hstack([linear, offset[:, None]])


def warp_affine(
    image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray | None, matrix: np.ndarray, border: str = "reflect"
) -> Arrays:
    """Warp with a 2 x 3 source-to-output matrix (:func:`affine_matrix`); the output keeps the input size."""
    size = (image.shape[1], image.shape[0])
    return _geometric(
        image, mask, fov, lambda array, flags, mode: cv2.warpAffine(array, matrix, size, flags=flags, borderMode=mode),
        border,
    )


def perspective_matrix(shape: tuple[int, ...], offsets: np.ndarray) -> np.ndarray:
    """The 3 x 3 homography moving the four image corners by ``offsets``.

    Args:
        shape: image shape (``H, W, ...``).
        offsets: 4 x 2 ``(dx, dy)`` pixel offsets of the corners top-left, top-right,
            bottom-right, bottom-left.
    """
    height, width = shape[:2]
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    moved = (corners + np.asarray(offsets, dtype=np.float32)).astype(np.float32)
    return cv2.getPerspectiveTransform(corners, moved)


def warp_perspective(
    image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray | None, matrix: np.ndarray, border: str = "reflect"
) -> Arrays:
    """Warp with a 3 x 3 source-to-output homography (:func:`perspective_matrix`); same output size."""
    size = (image.shape[1], image.shape[0])
    return _geometric(
        image,
        mask,
        fov,
        lambda array, flags, mode: cv2.warpPerspective(array, matrix, size, flags=flags, borderMode=mode),
        border,
    )


def elastic_field(
    rng: np.random.Generator, shape: tuple[int, ...], alpha: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field (Simard et al., 2003), scaled to an RMS of ``alpha`` pixels.

    Each component is uniform noise in [-1, 1] smoothed by a Gaussian of standard deviation ``sigma``
    pixels, then scaled so that its root mean square is ``alpha`` (unlike Simard's raw ``alpha``
    factor, this keeps ``alpha`` in pixels whatever ``sigma``). The noise is drawn on a grid up to
    ``sigma / 4`` times coarser and upsampled bilinearly, which keeps the field smooth at the scale
    ``sigma`` and costs far less than smoothing at full resolution.

    Returns:
        ``(dx, dy)``, float32 ``H x W`` each.
    """
    height, width = shape[:2]
    factor = max(1, int(sigma // 4))
    grid = (-(-height // factor), -(-width // factor))
    noise = rng.random((2, *grid), dtype=np.float32) * 2.0 - 1.0
    components = []
    for component in noise:
        smooth = cv2.GaussianBlur(component, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT_101)
        if factor > 1:
            smooth = cv2.resize(smooth, (width, height), interpolation=cv2.INTER_LINEAR)
        rms = float(np.sqrt(np.mean(np.square(smooth, dtype=np.float64))))
        components.append(smooth * np.float32(alpha / rms) if rms > 0 else np.zeros_like(smooth))
    return components[0], components[1]


def remap(
    image: np.ndarray,
    mask: np.ndarray | None,
    fov: np.ndarray | None,
    dx: np.ndarray,
    dy: np.ndarray,
    border: str = "reflect",
) -> Arrays:
    """Resample so that output pixel ``(x, y)`` shows the input at ``(x + dx[y, x], y + dy[y, x])``."""
    height, width = image.shape[:2]
    map_x = (dx + np.arange(width, dtype=np.float32)[None, :]).astype(np.float32)
    map_y = (dy + np.arange(height, dtype=np.float32)[:, None]).astype(np.float32)
    return _geometric(
        image, mask, fov, lambda array, flags, mode: cv2.remap(array, map_x, map_y, flags, borderMode=mode), border
    )


def crop(
    image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray | None, top: int, left: int, height: int, width: int
) -> Arrays:
    """The ``height x width`` window at ``(top, left)``; pixels beyond the image are 0 (image, mask and fov)."""
    pad_bottom = max(top + height - image.shape[0], 0)
    pad_right = max(left + width - image.shape[1], 0)
    pad_top, pad_left = max(-top, 0), max(-left, 0)

    def window(array: np.ndarray) -> np.ndarray:
        if pad_top or pad_left or pad_bottom or pad_right:
            spatial = ((pad_top, pad_bottom), (pad_left, pad_right))
            array = np.pad(array, spatial + ((0, 0),) * (array.ndim - 2))
        row, col = top + pad_top, left + pad_left
        return np.ascontiguousarray(array[row : row + height, col : col + width])

    return window(image), None if mask is None else window(mask), None if fov is None else window(fov)


def _lookup(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map every value through a 256-entry table (one table, or one per channel as 256 x C)."""
    table = _to_uint8(table)
    if table.ndim == 2:
        table = np.ascontiguousarray(table[None, :, :])
    return _with_channels(cv2.LUT(image, table), image.shape[2])


_LEVELS = np.arange(256, dtype=np.float64)


def adjust_brightness(image: np.ndarray, delta: float) -> np.ndarray:
    """Add ``delta`` (8-bit units) to every channel, clipping to [0, 255]."""
    return _lookup(image, _LEVELS + delta)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale the distance of every value from the image mean (over all channels) by ``factor``."""
    mean = float(image.mean())
    return _lookup(image, mean + factor * (_LEVELS - mean))


def adjust_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """``255 * (v / 255) ** gamma``: gamma > 1 darkens the mid-tones, < 1 brightens them."""
    return _lookup(image, 255.0 * (_LEVELS / 255.0) ** gamma)


def adjust_hue_saturation(image: np.ndarray, hue: float, saturation: float) -> np.ndarray:
    """Rotate the hue by ``hue`` degrees and scale the HSV saturation by ``saturation`` (RGB only).

    A one-channel image has no hue or saturation and is returned unchanged. The hue is stored in
    OpenCV's 8-bit HSV, in steps of 2 degrees.
    """
    if image.shape[2] != 3:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hue_table = (np.arange(256) + int(round(hue / 2.0))) % 180
    tables = np.stack([hue_table, np.clip(_LEVELS * saturation, 0, 255), _LEVELS], axis=1)
    return cv2.cvtColor(_lookup(hsv, tables), cv2.COLOR_HSV2RGB)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel reaching about 3 sigma); 0 is the identity."""
    if sigma <= 0:
        return image
    return _with_channels(cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101), image.shape[2])


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add independent Gaussian noise of standard deviation ``std`` (8-bit units) to every value."""
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    # OpenCV adds, rounds and saturates to uint8 in one pass.
    return _with_channels(cv2.add(image, noise, dtype=cv2.CV_8U), image.shape[2])


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG with ``quality`` in 1..100 (``cv2.IMWRITE_JPEG_QUALITY``)."""
    colour = image.shape[2] == 3
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if colour else image[:, :, 0]
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DataError(f"jpeg: OpenCV could not encode a {image.shape} image")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB) if colour else decoded[:, :, None]


def apply_clahe(image: np.ndarray, clip_limit: float, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation on a ``tiles x tiles`` grid.

    Gray images are equalised directly, RGB images on the lightness channel of CIE L*a*b*.
    """
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles)))
    if image.shape[2] == 1:
        return clahe.apply(np.ascontiguousarray(image[:, :, 0]))[:, :, None]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def screen_photo(
    image: np.ndarray,
    mask: np.ndarray | None,
    fov: np.ndarray | None,
    rng: np.random.Generator,
    perspective: float = 0.04,
    moire: float = 0.08,
    period: float = 12.0,
    cast: float = 0.1,
    blur: float = 0.8,
    noise: float = 5.0,
) -> Arrays:
    """Simulate a phone photograph of the image shown on a monitor.

    In order: (1) the screen seen at an angle: each corner moves inwards by ``perspective * u`` of
    the side (``u`` uniform in [0, 1] per coordinate), the surround becomes black, and mask and FOV
    are warped with it (0 outside the screen); (2) moire: the image is multiplied by
    ``1 + moire * cos(phase)``, bands of about ``period`` pixels at a random angle, bent by a random
    curvature, with a random phase shift per colour channel; (3) a colour cast: channel gains
    ``1 + cast * u`` (``u`` uniform in [-1, 1]; one gain, their mean, for gray images); (4) Gaussian
    blur of ``blur`` pixels; (5) Gaussian noise of standard deviation ``noise``.

    Random directions come from ``rng`` in a fixed order and magnitudes scale linearly with the
    arguments, so one seed with larger arguments gives the same effect, stronger.
    """
    height, width, channels = image.shape
    towards_centre = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    offsets = towards_centre * rng.random((4, 2)) * perspective * np.array([width - 1, height - 1])
    image, mask, fov = warp_perspective(image, mask, fov, perspective_matrix(image.shape, offsets), "constant")

    angle = rng.uniform(0.0, math.pi)
    curvature = rng.uniform(-0.5, 0.5)
    phase_shift = rng.uniform(0.0, 2.0 * math.pi)
    channel_shifts = rng.uniform(0.0, 2.0 * math.pi / 3.0) * np.arange(channels)
    gains = 1.0 + cast * rng.uniform(-1.0, 1.0, 3)

    frequency = 2.0 * math.pi / period
    x = np.arange(width, dtype=np.float32) - width / 2.0
    y = np.arange(height, dtype=np.float32)[:, None] - height / 2.0
    # The quadratic term bends the bands: the local frequency drifts by up to 1/2 of it at the borders.
    bend = np.float32(curvature * frequency / max(height, width))
    phase = frequency * (math.cos(angle) * x + math.sin(angle) * y) + bend * (x * x + y * y) + phase_shift
    cos_phase, sin_phase = np.cos(phase), np.sin(phase)
    photo = image.astype(np.float32)
    for channel, shift in enumerate(channel_shifts):
        pattern = cos_phase * np.float32(math.cos(shift)) - sin_phase * np.float32(math.sin(shift))
        gain = gains[channel] if channels == 3 else gains.mean()
        photo[:, :, channel] *= (1.0 + np.float32(moire) * pattern) * np.float32(gain)
    if blur > 0:
        photo = _with_channels(cv2.GaussianBlur(photo, (0, 0), blur, borderType=cv2.BORDER_REFLECT_101), channels)
    grain = rng.standard_normal(photo.shape, dtype=np.float32) * np.float32(noise)
    return _with_channels(cv2.add(photo, grain, dtype=cv2.CV_8U), channels), mask, fov


# ----------------------------------------------------------------------------- op arguments


class _Param(NamedTuple):
    """One op argument: ``kind`` says its form, ``low``/``high`` bound its values (inclusive).

    Kinds: ``limit`` (a number L >= 0; ops draw from [-L, L] or use it as is), ``range`` (a number or
    a ``[low, high]`` pair, drawn uniformly), ``int_range`` (the same with integers), ``int``,
    ``size`` (a positive integer or ``[height, width]``) and ``border`` (one of :data:`BORDERS`).
    A default of None makes the argument required.
    """

    kind: str
    default: Any
    low: float = 0.0
    high: float = math.inf


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounds(param: _Param) -> str:
    return f"[{param.low:g}, {param.high:g}]"


def _parse_arg(param: _Param, value: Any) -> Any:
    """Check and normalise one argument; raises ValueError with the rule broken."""
    kind = param.kind
    if kind == "border":
        if value not in BORDERS:
            raise ValueError(f"must be one of {', '.join(BORDERS)}, got {value!r}")
        return value
    if kind == "size":
        pair = [value, value] if _is_int(value) else value
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
            raise ValueError(f"must be a positive integer or a [height, width] pair, got {value!r}")
        return [int(pair[0]), int(pair[1])]
    integer = kind in ("int", "int_range")
    valid = _is_int if integer else _is_number
    what = "an integer" if integer else "a number"
    if kind in ("limit", "int"):
        if not valid(value) or not param.low <= value <= param.high:
            raise ValueError(f"must be {what} in {_bounds(param)}, got {value!r}")
        return int(value) if integer else float(value)
    pair = [value, value] if valid(value) else value
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or not all(valid(v) for v in pair)
        or not param.low <= pair[0] <= pair[1] <= param.high
    ):
        raise ValueError(
            f"must be {what} or a [low, high] pair with {param.low:g} <= low <= high <= {param.high:g}, got {value!r}"
        )
    return [int(v) for v in pair] if integer else [float(v) for v in pair]


def _closest(name: str, names: Sequence[str], label: str) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"did you mean {close[0]!r}?" if close else f"{label}: {', '.join(names)}"


# ----------------------------------------------------------------------------- random ops


def _draw(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _draw_limit(rng: np.random.Generator, limit: float) -> float:
    return float(rng.uniform(-limit, limit))


class _Op:
    """A random op: ``params`` declares its arguments besides ``p``; ``apply`` draws and transforms."""

    name: ClassVar[str]
    params: ClassVar[dict[str, _Param]] = {}
    default_p: ClassVar[float] = 0.5

    def __init__(self, **args: Any) -> None:
        self.args = args

    def apply(self, rng: np.random.Generator, image: np.ndarray, mask, fov) -> Arrays:
        raise NotImplementedError


_BORDER = _Param("border", "reflect")


class _HorizontalFlip(_Op):
    """Mirror left-right."""

    name = "hflip"

    def apply(self, rng, image, mask, fov):
        return flip(image, mask, fov, horizontal=True)


class _VerticalFlip(_Op):
    """Mirror top-bottom."""

    name = "vflip"

    def apply(self, rng, image, mask, fov):
        return flip(image, mask, fov, horizontal=False)


class _Rot90(_Op):
    """Rotate by 1, 2 or 3 quarter turns (equally likely); a non-square image becomes W x H for odd turns."""

    name = "rot90"

    def apply(self, rng, image, mask, fov):
        return rot90(image, mask, fov, int(rng.integers(1, 4)))


class _Rotate(_Op):
    """Rotate about the centre by an angle drawn from [-limit, limit] degrees."""

    name = "rotate"
    params = {"limit": _Param("limit", 30.0, 0, 180), "border": _BORDER}

    def apply(self, rng, image, mask, fov):
        matrix = affine_matrix(image.shape, angle=_draw_limit(rng, self.args["limit"]))
        return warp_affine(image, mask, fov, matrix, self.args["border"])


class _Affine(_Op):
    """Rotation (degrees in [-rotate, rotate]), zoom (factor in ``scale``), shear (degrees in
    [-shear, shear]) and translation (up to ``translate`` of the side) as one warp about the centre."""

    name = "affine"
    params = {
        "rotate": _Param("limit", 15.0, 0, 180),
        "scale": _Param("range", [0.9, 1.1], 0.05, 20),
        "translate": _Param("limit", 0.05, 0, 1),
        "shear": _Param("limit", 5.0, 0, 60),
        "border": _BORDER,
    }

    def apply(self, rng, image, mask, fov):
        args = self.args
        angle = _draw_limit(rng, args["rotate"])
        scale = _draw(rng, args["scale"])
        shear = _draw_limit(rng, args["shear"])
        shift = (
            _draw_limit(rng, args["translate"]) * image.shape[1],
            _draw_limit(rng, args["translate"]) * image.shape[0],
        )
        matrix = affine_matrix(image.shape, angle=angle, scale=scale, shear=shear, translate=shift)
        return warp_affine(image, mask, fov, matrix, args["border"])


class _Elastic(_Op):
    """Elastic deformation (:func:`elastic_field`): RMS displacement ``alpha`` and smoothness ``sigma``, in pixels."""

    name = "elastic"
    params = {
        "alpha": _Param("range", [1.0, 4.0], 0, 1000),
        "sigma": _Param("range", [6.0, 12.0], 0.5, 1000),
        "border": _BORDER,
    }

    def apply(self, rng, image, mask, fov):
        alpha, sigma = _draw(rng, self.args["alpha"]), _draw(rng, self.args["sigma"])
        dx, dy = elastic_field(rng, image.shape, alpha, sigma)
        return remap(image, mask, fov, dx, dy, self.args["border"])


class _Perspective(_Op):
    """Move each corner by up to ``s`` of the side in each direction, ``s`` drawn from ``scale``."""

    name = "perspective"
    params = {"scale": _Param("range", [0.02, 0.06], 0, 0.45), "border": _BORDER}

    def apply(self, rng, image, mask, fov):
        strength = _draw(rng, self.args["scale"])
        sides = np.array([image.shape[1] - 1, image.shape[0] - 1], dtype=np.float64)
        offsets = rng.uniform(-1.0, 1.0, (4, 2)) * strength * sides
        return warp_perspective(image, mask, fov, perspective_matrix(image.shape, offsets), self.args["border"])


class _Crop(_Op):
    """A random ``size`` window (``[height, width]``); a smaller image is padded evenly with 0 first."""

    name = "crop"
    params = {"size": _Param("size", None)}
    default_p = 1.0

    def apply(self, rng, image, mask, fov):
        height, width = self.args["size"]
        spare_h, spare_w = image.shape[0] - height, image.shape[1] - width
        # A negative offset pads: half the shortfall (rounded down) before, the rest after.
        top = int(rng.integers(spare_h + 1)) if spare_h >= 0 else -(-spare_h // 2)
        left = int(rng.integers(spare_w + 1)) if spare_w >= 0 else -(-spare_w // 2)
        return crop(image, mask, fov, top, left, height, width)


class _Photometric(_Op):
    """An op that changes only the image."""

    def apply(self, rng, image, mask, fov):
        return self.transform(rng, image), mask, fov

    def transform(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _Brightness(_Photometric):
    """Add a shift drawn from [-limit, limit] x 255."""

    name = "brightness"
    params = {"limit": _Param("limit", 0.2, 0, 1)}

    def transform(self, rng, image):
        return adjust_brightness(image, 255.0 * _draw_limit(rng, self.args["limit"]))


class _Contrast(_Photometric):
    """Scale contrast about the image mean by a factor drawn from ``range``."""

    name = "contrast"
    params = {"range": _Param("range", [0.7, 1.3], 0, 10)}

    def transform(self, rng, image):
        return adjust_contrast(image, _draw(rng, self.args["range"]))


class _Gamma(_Photometric):
    """Gamma curve with the exponent drawn from ``range``."""

    name = "gamma"
    params = {"range": _Param("range", [0.7, 1.5], 0.05, 20)}

    def transform(self, rng, image):
        return adjust_gamma(image, _draw(rng, self.args["range"]))


class _HueSaturation(_Photometric):
    """Hue rotation drawn from [-hue, hue] degrees and saturation factor from ``saturation``; gray images unchanged."""

    name = "hue_saturation"
    params = {"hue": _Param("limit", 10.0, 0, 180), "saturation": _Param("range", [0.7, 1.3], 0, 10)}

    def transform(self, rng, image):
        hue, saturation = _draw_limit(rng, self.args["hue"]), _draw(rng, self.args["saturation"])
        return adjust_hue_saturation(image, hue, saturation)


class _Blur(_Photometric):
    """Gaussian blur with ``sigma`` pixels drawn from ``sigma``."""

    name = "blur"
    params = {"sigma": _Param("range", [0.3, 1.5], 0, 50)}

    def transform(self, rng, image):
        return gaussian_blur(image, _draw(rng, self.args["sigma"]))


class _Noise(_Photometric):
    """Gaussian noise with a standard deviation (8-bit units) drawn from ``std``."""

    name = "noise"
    params = {"std": _Param("range", [2.0, 10.0], 0, 255)}

    def transform(self, rng, image):
        return gaussian_noise(image, _draw(rng, self.args["std"]), rng)


class _Jpeg(_Photometric):
    """JPEG round trip with an integer quality drawn from ``quality``."""

    name = "jpeg"
    params = {"quality": _Param("int_range", [30, 95], 1, 100)}

    def transform(self, rng, image):
        low, high = self.args["quality"]
        return jpeg_compress(image, int(rng.integers(low, high + 1)))


class _Clahe(_Photometric):
    """CLAHE (:func:`apply_clahe`) with a clip limit drawn from ``clip_limit`` on ``tiles x tiles`` tiles."""

    name = "clahe"
    params = {"clip_limit": _Param("range", [1.0, 4.0], 0.1, 100), "tiles": _Param("int", 8, 1, 64)}

    def transform(self, rng, image):
        return apply_clahe(image, _draw(rng, self.args["clip_limit"]), self.args["tiles"])


class _ScreenPhoto(_Op):
    """:func:`screen_photo` with each strength drawn from its range (``cast`` is a limit)."""

    name = "screen_photo"
    params = {
        "perspective": _Param("range", [0.0, 0.06], 0, 0.45),
        "moire": _Param("range", [0.03, 0.12], 0, 1),
        "period": _Param("range", [6.0, 24.0], 2, 1000),
        "cast": _Param("limit", 0.15, 0, 1),
        "blur": _Param("range", [0.3, 1.2], 0, 50),
        "noise": _Param("range", [2.0, 8.0], 0, 255),
    }

    def apply(self, rng, image, mask, fov):
        args = self.args
        return screen_photo(
            image,
            mask,
            fov,
            rng,
            perspective=_draw(rng, args["perspective"]),
            moire=_draw(rng, args["moire"]),
            period=_draw(rng, args["period"]),
            cast=args["cast"],
            blur=_draw(rng, args["blur"]),
            noise=_draw(rng, args["noise"]),
        )


OPS: dict[str, type[_Op]] = {
    op.name: op
    for op in (
        _HorizontalFlip,
        _VerticalFlip,
        _Rot90,
        _Rotate,
        _Affine,
        _Elastic,
        _Perspective,
        _Crop,
        _Brightness,
        _Contrast,
        _Gamma,
        _HueSaturation,
        _Blur,
        _Noise,
        _Jpeg,
        _Clahe,
        _ScreenPhoto,
    )
}
"""Op name -> op class; each class docstring says what it does and ``params`` lists its arguments."""

SAS_PIPELINE: tuple[dict[str, Any], ...] = (
    {"name": "blur", "p": 0.25, "sigma": [0.3, 2.5]},
    {"name": "noise", "p": 0.3, "std": [2, 30]},
    {"name": "jpeg", "p": 0.25, "quality": [10, 90]},
    {"name": "screen_photo", "p": 0.25, "perspective": [0.0, 0.08], "moire": [0.03, 0.16], "period": [8, 24],
     "blur": [0.3, 1.6], "noise": [2, 10]},
)
"""Strong augmentation (``data.augment: sas``; the same list as ``configs/augment/sas.yaml``).

The capture conditions that cost an unaugmented model most: blur, noise, JPEG and screen
photographs, with ranges (the screen photo's perspective, moire, blur and noise included) reaching
the robustness benchmark's severity 4 (:mod:`jmedseg.corruptions`: blur 2, noise std 24, JPEG
quality 15). Geometric ops and brightness, contrast, gamma, hue and CLAHE are left out: on DRIVE an
earlier preset with them gained nothing on their own corruptions (CLAHE and standardisation already
even out contrast and gamma; vessel segmentation is locally equivariant to rotation and scale) and
cost in-domain Dice. Flips and 90-degree rotations are left to the sampler's ``data.flip``.
"""

PRESETS: dict[str, tuple[dict[str, Any], ...]] = {"sas": SAS_PIPELINE}
"""Named pipelines accepted wherever a pipeline spec is (``data.augment: sas``)."""


# ----------------------------------------------------------------------------- specs and pipelines


def _check_entry(index: int, entry: Any, source: str) -> dict[str, Any]:
    """Validate one ``{name, p, **args}`` entry; return it with every argument filled in."""
    where = f"{source}: entry {index}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping like {{name: rotate, p: 0.5}}, got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{where} needs a 'name' (one of {', '.join(OPS)}), got {name!r}")
    if name not in OPS:
        raise ConfigError(f"{where}: unknown augmentation {name!r} ({_closest(name, list(OPS), 'known')})")
    op = OPS[name]
    where = f"{where} ({name})"
    known = ["p", *op.params]
    for arg in entry:
        if arg != "name" and arg not in known:
            raise ConfigError(f"{where}: unknown argument {arg!r} ({_closest(str(arg), known, 'arguments')})")
    p = entry.get("p", op.default_p)
    if not _is_number(p) or not 0 <= p <= 1:
        raise ConfigError(f"{where}: 'p' must be a probability in [0, 1], got {p!r}")
    checked: dict[str, Any] = {"name": name, "p": float(p)}
    for arg, param in op.params.items():
        if arg not in entry and param.default is None:
            raise ConfigError(f"{where}: missing required argument {arg!r}")
        try:
            checked[arg] = _parse_arg(param, entry.get(arg, param.default))
        except ValueError as exc:
            raise ConfigError(f"{where}: {arg!r} {exc}") from None
    return checked


def _read_ops_file(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: augmentation file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read augmentation file ({exc})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if isinstance(tree, dict) and isinstance(tree.get("data"), dict) and "augment" in tree["data"]:
        tree = tree["data"]["augment"]  # a config fragment such as configs/augment/sas.yaml
    if not isinstance(tree, list):
        raise ConfigError(
            f"{path}: expected a list of ops like [{{name: rotate, p: 0.5}}] or a config setting data.augment "
            f"to one, got {type(tree).__name__}"
        )
    return tree


def resolve_ops(spec: str | Sequence[Mapping[str, Any]], source: str = "data.augment") -> list[dict[str, Any]]:
    """Turn a pipeline spec into its checked list of ops, every argument filled in.

    Args:
        spec: a preset name (:data:`PRESETS`), a ``.yaml``/``.yml`` file (relative to the working
            directory) holding a list of ops or a config whose ``data.augment`` is such a list, or
            the list itself. Each op is ``{name: ..., p: ..., **args}``; omitted arguments take the
            defaults of the op's ``params``.
        source: what to name in error messages for an inline list.

    Returns:
        A new list of plain dicts (lists for ranges), ready to be saved as YAML.

    Raises:
        ConfigError: unknown preset, op or argument (with the closest valid name), a value out of
            its range, or an unreadable file; the message names the file or ``source`` and the entry.
    """
    if isinstance(spec, str):
        if spec in PRESETS:
            return [_check_entry(i, entry, f"preset {spec!r}") for i, entry in enumerate(PRESETS[spec], 1)]
        if Path(spec).suffix.lower() not in _YAML_SUFFIXES:
            hint = _closest(spec, list(PRESETS), "presets")
            raise ConfigError(f"{source}: {spec!r} is neither a preset nor a .yaml/.yml file ({hint})")
        path = Path(spec)
        return [_check_entry(i, entry, str(path)) for i, entry in enumerate(_read_ops_file(path), 1)]
    if isinstance(spec, (list, tuple)):
        return [_check_entry(i, entry, source) for i, entry in enumerate(spec, 1)]
    raise ConfigError(
        f"{source}: must be a preset name, a .yaml file or a list of ops, got {spec!r} ({type(spec).__name__})"
    )


def _working_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] not in (1, 3):
        shape = getattr(image, "shape", None)
        raise DataError(f"augment: image must be an H x W x C array with C = 1 or 3, got shape {shape}")
    if image.dtype == np.uint8:
        return image
    if image.size and (float(image.min()) < 0 or float(image.max()) > 255):
        raise DataError(
            f"augment: image values must lie in the 8-bit range [0, 255] (the raw image, not the standardised "
            f"one), got [{float(image.min()):g}, {float(image.max()):g}]"
        )
    return _to_uint8(image)


def _working_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    if mask.shape != shape:
        raise DataError(f"augment: mask shape {mask.shape} does not match image shape {shape}")
    if mask.dtype == np.uint8:
        return np.ascontiguousarray(mask)
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise DataError(f"augment: mask must hold integer class indices, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise DataError(f"augment: mask values must be class indices in 0..255, got [{mask.min()}, {mask.max()}]")
    return mask.astype(np.uint8)


def _working_fov(fov: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if fov is None:
        return None
    if fov.shape != shape:
        raise DataError(f"augment: fov shape {fov.shape} does not match image shape {shape}")
    return np.ascontiguousarray(fov, dtype=bool)


def prepare(image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray | None) -> Arrays:
    """Check arrays and convert them to the working form of the transforms (uint8 image and mask, bool fov).

    Raises:
        DataError: wrong image shape, values outside [0, 255] (a standardised image), mask values
            outside 0..255, or mask/fov shape different from the image's.
    """
    image = _working_image(image)
    shape = image.shape[:2]
    return np.ascontiguousarray(image), _working_mask(mask, shape), _working_fov(fov, shape)


class Pipeline:
    """Random ops applied in order, each with its own probability, drawing from one generator.

    Args:
        spec: a preset name, a YAML file or a list of ops (see :func:`resolve_ops`); an empty list
            gives the identity (which converts the image to uint8 and draws nothing).
        seed: seed of the pipeline's own generator, used when ``rng`` is None.
        rng: a generator to draw from instead (shared with its owner, e.g. the training sampler).
        source: what to name in error messages for an inline list.

    Example:
        >>> pipeline = Pipeline([{"name": "rotate", "p": 0.5, "limit": 30}, {"name": "gamma", "p": 0.3}], seed=0)
        >>> image, mask, fov = pipeline(image, mask, fov)
    """

    def __init__(
        self,
        spec: str | Sequence[Mapping[str, Any]] = (),
        seed: int | None = 0,
        rng: np.random.Generator | None = None,
        source: str = "augment",
    ) -> None:
        self.ops = resolve_ops(spec, source)
        self._transforms = [
            (op["p"], OPS[op["name"]](**{k: v for k, v in op.items() if k not in ("name", "p")})) for op in self.ops
        ]
        self.rng = rng if rng is not None else np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.ops)

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(op['name'] for op in self.ops) or 'identity'})"

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None, fov: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Augment one sample.

        Args:
            image: ``H x W x C`` image in the 8-bit range (see the module docstring).
            mask: ``H x W`` class indices in 0..255, or None.
            fov: ``H x W`` bool field of view, or None.

        Returns:
            ``(image uint8, mask with the input dtype or None, fov bool or None)``; the spatial size
            changes only with ``crop`` and odd ``rot90`` turns. An array no op changed may be the
            input array itself (inputs are never written to).
        """
        mask_dtype = None if mask is None else mask.dtype
        image, mask, fov = prepare(image, mask, fov)
        for p, op in self._transforms:
            if self.rng.random() < p:
                image, mask, fov = op.apply(self.rng, image, mask, fov)
        if mask is not None:
            mask = mask.astype(mask_dtype, copy=False)
        return image, mask, fov

    def state_dict(self) -> dict[str, Any]:
        """The generator state (plain Python values)."""
        return {"rng": copy.deepcopy(self.rng.bit_generator.state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the pipeline then draws what the saved one would have."""
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
