"""Segmentation datasets stored as folders of images, masks and optional field-of-view masks.

Layout of one split::

    <root>/<split>/images/<name>.<ext>   gray, RGB or RGBA image, 8 or 16 bit
    <root>/<split>/masks/<name>.<ext>    class-index mask (same base name, extension may differ)
    <root>/<split>/fov/<name>.<ext>      optional binary field-of-view mask

Supported extensions (case-insensitive): png, jpg, jpeg, tif, tiff, bmp, gif, ppm, pgm. Files and
folders whose name starts with ``.`` are ignored and files are sorted by base name.

Conventions of a loaded :class:`Sample`:

* ``image`` is float32 ``H x W x C`` at native resolution with ``C = in_channels``. 16-bit images are
  divided by 257 (65535 -> 255) so that every image is in the 8-bit range before normalisation.
  Gray images are repeated to 3 channels when ``in_channels=3``; colour images are converted to
  luminance (``cv2.COLOR_RGB2GRAY``) when ``in_channels=1``; an alpha channel is dropped.
  ``preprocess="green_clahe"`` takes the green channel (or the gray channel of a gray image) and
  applies CLAHE (clip limit 2.0, 8 x 8 tiles), giving one channel.
  Each channel is then standardised to zero mean and unit standard deviation, with the statistics
  computed inside the FOV when the sample has one (the same affine map is applied to the whole
  image). A constant channel becomes all zeros.
* ``mask`` is int64 ``H x W`` class indices. With ``num_classes=2`` a mask may hold values in
  ``{0, 255}`` or ``{0, 1}`` and 255 maps to 1; with more classes the values must be class indices
  ``0..num_classes-1``. ``mask`` is ``None`` for image-only splits loaded with
  ``require_masks=False``.
* ``fov`` is bool ``H x W`` (values ``{0, 255}`` or ``{0, 1}`` on disk) or ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from jmedseg.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESS_CHOICES",
    "Sample",
    "SegDataset",
    "apply_preprocess",
    "build_datasets",
    "load_image",
    "load_split",
    "read_image_file",
    "require_source_images",
    "split_train_val",
    "standardise",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm")
PREPROCESS_CHOICES = ("none", "green_clahe")

_MAX_LISTED = 5
_CLAHE_CLIP_LIMIT = 2.0
_CLAHE_TILES = (8, 8)


class Sample(NamedTuple):
    """One loaded example: ``image`` float32 HxWxC, ``mask`` int64 HxW or None, ``fov`` bool HxW or None."""

    name: str
    image: np.ndarray
    mask: np.ndarray | None
    fov: np.ndarray | None


class _Record(NamedTuple):
    name: str
    image_path: Path
    mask_path: Path | None
    fov_path: Path | None


class _Raw(NamedTuple):
    """Decoded but not yet normalised arrays, small enough to keep in memory for a whole split."""

    image: np.ndarray  # HxWxC uint8 (or float32 for 16-bit sources), preprocessed, C = in_channels
    mask: np.ndarray | None  # HxW uint8 class indices
    fov: np.ndarray | None  # HxW bool
    source: np.ndarray  # the image before preprocessing (``image`` itself when there is none)


def _format_names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names)} in total)"
    return shown


def _format_values(values: Iterable[int]) -> str:
    values = sorted(int(v) for v in values)
    shown = ", ".join(str(v) for v in values[:10])
    if len(values) > 10:
        shown += ", ..."
    return "{" + shown + "}"


def _check_options(num_classes: int, in_channels: int, preprocess: str) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not 2 <= num_classes <= 256:
        raise ConfigError(
            f"model.num_classes: must be an integer from 2 to 256 (masks hold 8-bit class indices), got {num_classes!r}"
        )
    if in_channels not in (1, 3) or isinstance(in_channels, bool):
        raise ConfigError(f"model.in_channels: must be 1 or 3, got {in_channels!r}")
    if preprocess not in PREPROCESS_CHOICES:
        raise ConfigError(f"data.preprocess: must be one of {', '.join(PREPROCESS_CHOICES)}, got {preprocess!r}")
    if preprocess == "green_clahe" and in_channels != 1:
        raise DataError(
            f"model.in_channels: preprocess 'green_clahe' produces 1 channel, so model.in_channels must be 1, "
            f"got {in_channels}"
        )


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as pil_image:
            pil_image.load()
            if pil_image.mode in ("L", "RGB", "RGBA"):
                array = np.array(pil_image)
            else:
                array = np.array(pil_image.convert("RGBA" if "transparency" in pil_image.info else "RGB"))
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read image file ({exc})") from None
    if array.ndim == 3 and array.shape[2] >= 3 and _channels_equal(array[..., :3]):
        # Palette files with a gray palette (most GIF masks) decode to identical RGB channels.
        array = np.ascontiguousarray(array[..., 0])
    return array


def _channels_equal(array: np.ndarray) -> bool:
    return bool(np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]))


def read_image_file(path: str | Path) -> np.ndarray:
    """Decode an image file without changing its values.

    OpenCV (``IMREAD_UNCHANGED``) decodes everything except GIF, which Pillow reads; a GIF palette
    is expanded to RGB, or to gray when all its colours are gray. Colour images are returned in RGB
    (or RGBA) order.

    Args:
        path: image file.

    Returns:
        ``H x W`` or ``H x W x C`` array with the file's own dtype (uint8 or uint16 usually).

    Raises:
        DataError: the file is missing, unreadable, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".gif":
        return _read_with_pillow(path)
    try:
        encoded = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    array = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if encoded.size else None
    if array is None:
        raise DataError(f"{path}: cannot decode image (unsupported, corrupt or truncated file)")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return array


def _to_8bit_range(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0).astype(np.float32)
    raise DataError(f"{path}: unsupported pixel type {array.dtype} (expected 8-bit or 16-bit unsigned integers)")


def _image_channels(array: np.ndarray, path: Path) -> np.ndarray:
    """Return ``H x W x 1`` (gray) or ``H x W x 3`` (RGB), dropping alpha."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3 and array.shape[2] in (1, 2):
        return array[:, :, :1]  # gray or gray + alpha
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array[:, :, :3]
    raise DataError(f"{path}: unsupported image shape {array.shape} (expected gray, RGB or RGBA)")


def _decode_source(path: Path, in_channels: int, preprocess: str) -> np.ndarray:
    """Decode to ``H x W x C`` in the 8-bit range (uint8, or float32 for 16-bit sources), before ``preprocess``.

    Without preprocessing the channels are converted to ``in_channels``; ``green_clahe`` keeps the
    stored channels (gray or RGB), since it picks its own.
    """
    array = _image_channels(_to_8bit_range(read_image_file(path), path), path)
    if preprocess != "none":
        return np.ascontiguousarray(array)
    if in_channels == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if in_channels == 1 and array.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.ascontiguousarray(array)


def apply_preprocess(image: np.ndarray, preprocess: str) -> np.ndarray:
    """Apply ``preprocess`` to a decoded 8-bit ``H x W x C`` image (see the module docstring).

    ``"none"`` returns ``image`` itself; ``"green_clahe"`` returns a uint8 ``H x W x 1`` image.
    """
    if preprocess != "green_clahe":
        return image
    channel = image[:, :, 1] if image.shape[2] == 3 else image[:, :, 0]
    if channel.dtype != np.uint8:
        channel = np.clip(np.rint(channel), 0, 255).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=_CLAHE_CLIP_LIMIT, tileGridSize=_CLAHE_TILES)
    return clahe.apply(np.ascontiguousarray(channel))[:, :, None]


def require_source_images(dataset, user: str) -> None:
    """Raise DataError unless ``dataset`` gives its images as captured (``source`` and ``apply_preprocess``).

    ``user`` names what needs them (e.g. ``"train.yaml: data.augment"``) and starts the message.
    """
    if not all(callable(getattr(dataset, method, None)) for method in ("source", "apply_preprocess")):
        raise DataError(f"{user} needs the 8-bit source images of a SegDataset (its source(index) and "
                        f"apply_preprocess methods), got a {type(dataset).__name__}")


def _read_label_file(path: Path) -> np.ndarray:
    array = read_image_file(path)
    if array.ndim == 3 and array.shape[2] in (3, 4) and _channels_equal(array[..., :3]):
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[2] in (1, 2):
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a single-channel mask, got a colour image of shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: unsupported mask pixel type {array.dtype} (expected integers)")
    return np.ascontiguousarray(array)


def _decode_mask(path: Path, num_classes: int) -> np.ndarray:
    """Decode a mask to uint8 class indices."""
    array = _read_label_file(path)
    values = set(np.unique(array).tolist())
    if num_classes == 2:
        if values <= {0, 255}:
            return (array == 255).astype(np.uint8)
        if values <= {0, 1}:
            return array.astype(np.uint8)
        raise DataError(
            f"{path}: mask values {_format_values(values)} are outside {{0, 255}} or {{0, 1}} (binary, num_classes=2)"
        )
    if values <= set(range(num_classes)):
        return array.astype(np.uint8)
    raise DataError(
        f"{path}: mask values {_format_values(values)} are outside 0..{num_classes - 1} (num_classes={num_classes})"
    )


def _decode_fov(path: Path) -> np.ndarray:
    array = _read_label_file(path)
    values = set(np.unique(array).tolist())
    if values <= {0, 255} or values <= {0, 1}:
        return array > 0
    raise DataError(f"{path}: fov is not binary: values {_format_values(values)} are outside {{0, 255}} or {{0, 1}}")


def standardise(image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """Standardise each channel to zero mean and unit standard deviation.

    Args:
        image: ``H x W x C`` array with ``C <= 4`` (any real dtype, e.g. the 8-bit range of
            :meth:`SegDataset.raw`).
        fov: optional bool ``H x W`` mask; when it has any pixel the statistics are taken inside it
            (the same affine map is applied to the whole image).

    Returns:
        float32 ``H x W x C``; a constant channel becomes all zeros.
    """
    channels = image.shape[2]
    pixels = image if image.dtype in (np.uint8, np.float32) else image.astype(np.float32)
    region = np.ascontiguousarray(fov, dtype=np.uint8) if fov is not None and fov.any() else None
    # OpenCV accumulates in float64, several times faster than NumPy with a boolean index.
    mean, std = (stat.ravel()[:channels] for stat in cv2.meanStdDev(np.ascontiguousarray(pixels), mask=region))
    std = np.where(std > 1e-6, std, 1.0)
    return ((image.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)


def load_image(
    path: str | Path, in_channels: int = 3, preprocess: str = "none", fov: np.ndarray | None = None
) -> np.ndarray:
    """Read one image file the way :func:`load_split` does (channel conversion, preprocessing, standardisation).

    Args:
        path: image file.
        in_channels: 1 or 3 output channels.
        preprocess: ``"none"`` or ``"green_clahe"`` (needs ``in_channels=1``).
        fov: optional bool ``H x W`` mask restricting the standardisation statistics.

    Returns:
        float32 ``H x W x in_channels`` array.
    """
    _check_options(2, in_channels, preprocess)
    path = Path(path)
    image = apply_preprocess(_decode_source(path, in_channels, preprocess), preprocess)
    if fov is not None and fov.shape != image.shape[:2]:
        raise DataError(f"{path}: image size {_size(image)} does not match fov size {fov.shape[1]}x{fov.shape[0]}")
    return standardise(image, fov)


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def _list_images(folder: Path) -> dict[str, Path]:
    """Map base name -> file for the image files of ``folder`` (hidden files and other extensions skipped)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            raise DataError(
                f"{path}: base name '{path.stem}' is used by two files ({found[path.stem].name} and {path.name})"
            )
        found[path.stem] = path
    return found


def _check_pairing(images: dict[str, Path], others: dict[str, Path], folder: Path, kind: str) -> None:
    without = sorted(set(images) - set(others))
    if without:
        raise DataError(f"{folder}: no {kind} for image(s) {_format_names(without)}")
    orphans = sorted(set(others) - set(images))
    if orphans:
        raise DataError(f"{folder}: {kind} without image: {_format_names(orphans)}")


class SegDataset(Sequence[Sample]):
    """A sequence of :class:`Sample` read from one split folder; see the module docstring for conventions.

    With ``cache=True`` every file is decoded and checked when the dataset is created and the decoded
    8-bit arrays are kept in memory; with ``cache=False`` files are decoded (and checked) on each access.
    Indexing returns fresh arrays, so callers may modify them. :meth:`raw` gives a sample before
    standardisation; :meth:`source` one before preprocessing too, the image as captured, which
    augmentations and corruptions change before :meth:`apply_preprocess` and :func:`standardise`.
    """

    def __init__(
        self,
        records: Sequence[_Record],
        num_classes: int,
        in_channels: int,
        preprocess: str,
        cache: bool,
        description: str,
        _shared_cache: dict[str, _Raw] | None = None,
    ) -> None:
        self._records = list(records)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.preprocess = preprocess
        self.description = description
        self._cache = _shared_cache if _shared_cache is not None else ({} if cache else None)
        if self._cache is not None:
            for record in self._records:
                self._raw(record)

    @property
    def names(self) -> list[str]:
        """Base names of the samples, in order."""
        return [record.name for record in self._records]

    @property
    def has_masks(self) -> bool:
        """True when every sample has a mask (an empty dataset has none)."""
        return bool(self._records) and all(record.mask_path is not None for record in self._records)

    @property
    def has_fov(self) -> bool:
        """True when every sample has a field-of-view mask."""
        return bool(self._records) and all(record.fov_path is not None for record in self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        sample = self.raw(index)
        return sample._replace(image=standardise(sample.image, sample.fov))

    def raw(self, index: int) -> Sample:
        """The sample at ``index`` before standardisation.

        The image is ``H x W x C`` in the 8-bit range after channel conversion and ``preprocess``:
        uint8, or float32 holding 0..255 for 16-bit sources. Mask and FOV are as in ``dataset[index]``
        and ``standardise(raw.image, raw.fov)`` equals ``dataset[index].image``. Returns fresh arrays.
        """
        return self._sample(index, source=False)

    def source(self, index: int) -> Sample:
        """The sample at ``index`` before preprocessing: the decoded 8-bit image, as captured.

        Without ``preprocess`` this is :meth:`raw`; with ``green_clahe`` the image keeps its stored
        channels (gray or RGB). ``standardise(apply_preprocess(image), fov)`` equals
        ``dataset[index].image``. Returns fresh arrays.
        """
        return self._sample(index, source=True)

    def apply_preprocess(self, image: np.ndarray) -> np.ndarray:
        """This dataset's ``preprocess`` applied to a source image (e.g. an augmented or corrupted one)."""
        return apply_preprocess(image, self.preprocess)

    def _sample(self, index: int, source: bool) -> Sample:
        if isinstance(index, slice):
            raise TypeError("SegDataset does not support slices; use subset(indices)")
        record = self._records[index]
        raw = self._raw(record)
        mask = raw.mask.astype(np.int64) if raw.mask is not None else None
        fov = raw.fov.copy() if raw.fov is not None else None
        return Sample(record.name, (raw.source if source else raw.image).copy(), mask, fov)

    def subset(self, indices: Iterable[int], description: str | None = None) -> "SegDataset":
        """A dataset holding the samples at ``indices`` (in that order), sharing this dataset's cache."""
        records = [self._records[int(i)] for i in indices]
        return SegDataset(
            records,
            self.num_classes,
            self.in_channels,
            self.preprocess,
            cache=self._cache is not None,
            description=description or self.description,
            _shared_cache=self._cache,
        )

    def _raw(self, record: _Record) -> _Raw:
        if self._cache is not None and record.name in self._cache:
            return self._cache[record.name]
        source = _decode_source(record.image_path, self.in_channels, self.preprocess)
        image = apply_preprocess(source, self.preprocess)
        mask = fov = None
        if record.mask_path is not None:
            mask = _decode_mask(record.mask_path, self.num_classes)
            if mask.shape != image.shape[:2]:
                raise DataError(
                    f"{record.mask_path}: mask size {_size(mask)} does not match image size {_size(image)} "
                    f"of {record.image_path.name}"
                )
        if record.fov_path is not None:
            fov = _decode_fov(record.fov_path)
            if fov.shape != image.shape[:2]:
                raise DataError(
                    f"{record.fov_path}: fov size {_size(fov)} does not match image size {_size(image)} "
                    f"of {record.image_path.name}"
                )
        raw = _Raw(image, mask, fov, source)
        if self._cache is not None:
            self._cache[record.name] = raw
        return raw

    def __repr__(self) -> str:
        return (
            f"SegDataset({self.description!r}, {len(self)} samples, num_classes={self.num_classes}, "
            f"in_channels={self.in_channels})"
        )


def load_split(
    root: str | Path,
    split: str,
    num_classes: int = 2,
    in_channels: int = 3,
    preprocess: str = "none",
    cache: bool = True,
    require_masks: bool = True,
) -> SegDataset:
    """Load ``<root>/<split>`` (``images/``, ``masks/`` and optional ``fov/``).

    Args:
        root: dataset folder.
        split: split sub-folder, e.g. ``"train"``.
        num_classes: number of classes, 2 for binary masks.
        in_channels: 1 or 3 image channels.
        preprocess: ``"none"`` or ``"green_clahe"`` (needs ``in_channels=1``).
        cache: decode and check every file now and keep the decoded arrays in memory.
        require_masks: when False a split without a ``masks/`` folder loads with ``mask=None``.
            A ``masks/`` folder that exists must always match the images.

    Returns:
        the split as a :class:`SegDataset`, sorted by base name.

    Raises:
        DataError: missing or empty split, unpaired files, unreadable files, size mismatches,
            or mask/fov values outside the allowed set; the message names the file.
    """
    _check_options(num_classes, in_channels, preprocess)
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found")
    image_dir, mask_dir, fov_dir = split_dir / "images", split_dir / "masks", split_dir / "fov"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: images folder not found")
    images = _list_images(image_dir)
    if not images:
        raise DataError(f"{image_dir}: empty split: no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    masks: dict[str, Path] | None = None
    if mask_dir.is_dir():
        masks = _list_images(mask_dir)
        _check_pairing(images, masks, mask_dir, "mask")
    elif require_masks:
        raise DataError(f"{mask_dir}: masks folder not found")
    fovs: dict[str, Path] | None = None
    if fov_dir.is_dir():
        fovs = _list_images(fov_dir)
        _check_pairing(images, fovs, fov_dir, "fov")
    records = [
        _Record(name, path, masks[name] if masks is not None else None, fovs[name] if fovs is not None else None)
        for name, path in sorted(images.items())
    ]
    return SegDataset(records, num_classes, in_channels, preprocess, cache, description=str(split_dir))


def split_train_val(dataset: SegDataset, fraction: float, seed: int = 0) -> tuple[SegDataset, SegDataset]:
    """Carve a validation set out of ``dataset`` with a seeded, deterministic rule.

    The names are sorted, ``numpy.random.RandomState(seed).permutation(n)`` is drawn and its first
    ``round(fraction * n)`` positions (clipped to ``1..n-1`` when ``n >= 2``) become the validation set.
    Both results are sorted by name. With ``n < 2`` everything goes to train and val is empty.

    Args:
        dataset: the dataset to split.
        fraction: share of images for validation, ``0 < fraction < 1``.
        seed: permutation seed.

    Returns:
        ``(train, val)`` datasets sharing the cache of ``dataset``.
    """
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be a number strictly between 0 and 1, got {fraction!r}")
    names = dataset.names
    by_name = sorted(range(len(names)), key=lambda i: names[i])
    n = len(by_name)
    n_val = min(max(int(round(fraction * n)), 1), n - 1) if n >= 2 else 0
    permutation = np.random.RandomState(seed).permutation(n)
    val_positions = set(permutation[:n_val].tolist())
    train_idx = [by_name[p] for p in range(n) if p not in val_positions]
    val_idx = [by_name[p] for p in range(n) if p in val_positions]
    description = dataset.description
    return (
        dataset.subset(train_idx, f"{description} (train part, val_fraction={fraction}, seed={seed})"),
        dataset.subset(val_idx, f"{description} (val part, val_fraction={fraction}, seed={seed})"),
    )


def build_datasets(
    root: str | Path | None,
    train_split: str = "train",
    val_split: str | None = None,
    test_split: str | None = "test",
    val_fraction: float = 0.2,
    val_seed: int = 0,
    num_classes: int = 2,
    in_channels: int = 3,
    preprocess: str = "none",
    cache: bool = True,
) -> dict[str, SegDataset | None]:
    """Load the train, val and test datasets of one dataset folder.

    Args:
        root: dataset folder; ``None`` uses the generated synthetic vessel dataset
            (:func:`jmedseg.data.synthetic.synthetic_root`).
        train_split: training split folder.
        val_split: validation split folder; ``None`` carves ``val_fraction`` of the training split
            with :func:`split_train_val` (seed ``val_seed``), or gives ``val=None`` when
            ``val_fraction`` is 0 (train on every image, no model selection).
        test_split: test split folder; ``None`` or a missing folder gives ``test=None``.
        val_fraction, val_seed: see :func:`split_train_val`.
        num_classes, in_channels, preprocess, cache: see :func:`load_split`.

    Returns:
        ``{"train": ..., "val": ..., "test": ... or None}``. Every split needs masks.
    """
    if root is None:
        from jmedseg.data.synthetic import synthetic_root

        root = synthetic_root()
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    options = dict(num_classes=num_classes, in_channels=in_channels, preprocess=preprocess, cache=cache)
    train = load_split(root, train_split, **options)
    if val_split is None and val_fraction == 0:
        val = None
    elif val_split is None:
        if len(train) < 2:
            raise DataError(
                f"{root / train_split}: a validation set cannot be carved from {len(train)} image; "
                "give a separate validation split"
            )
        train, val = split_train_val(train, val_fraction, val_seed)
    else:
        val = load_split(root, val_split, **options)
    test = None
    if test_split is not None and (root / test_split).is_dir():
        test = load_split(root, test_split, **options)
    return {"train": train, "val": val, "test": test}
