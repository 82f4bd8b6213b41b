"""An infinite, resumable stream of augmented training batches drawn from a segmentation dataset."""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from jmedseg.augment import Pipeline
from jmedseg.data.dataset import Sample, require_source_images, standardise
from jmedseg.errors import CheckpointError, ConfigError, DataError

__all__ = ["TrainSampler"]

_MODES = ("patch", "resize")


def _pair(value: int | Sequence[int], key: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ConfigError(f"{key}: must be a positive integer or a (height, width) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pad_to(image: np.ndarray, mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad (image) / background-pad (mask) evenly on both sides up to at least ``height x width``."""
    pad_h, pad_w = max(height - mask.shape[0], 0), max(width - mask.shape[1], 0)
    if not pad_h and not pad_w:
        return image, mask
    spatial = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    return np.pad(image, spatial + ((0, 0),)), np.pad(mask, spatial)


class TrainSampler:
    """Infinite iterator of training batches ``(images float32 NxCxHxW, masks int64 NxHxW)``.

    An epoch visits the images in a seeded random order, one crop (or resized copy) per image; the
    last batch of an epoch is filled up with images from the start of the same order, so every batch
    has ``batch_size`` items and an epoch has exactly :attr:`epoch_length` batches.

    * ``mode="patch"``: a random ``patch_size`` crop. With probability ``foreground_bias`` the crop
      is centred (as far as the borders allow) on a random foreground pixel, otherwise its position
      is uniform. Images smaller than the patch are padded evenly on both sides with zeros (the mean
      of a standardised image) and background (class 0) in the mask.
    * ``mode="resize"``: the whole image resized to ``image_size`` (bilinear for images, nearest for
      masks, whose class indices must be below 256).
    * ``flip=True``: random horizontal and vertical flips, plus random 90 degree rotations when the
      output is square.
    * ``augment``: a :class:`jmedseg.augment.Pipeline` run on the 8-bit image as captured, with its
      mask and FOV (:meth:`SegDataset.source <jmedseg.data.dataset.SegDataset.source>`), so it acts
      before the dataset's preprocessing (e.g. ``green_clahe``) as a change of capture conditions
      would; preprocessing and standardisation follow, the latter with its statistics inside the
      augmented FOV. In ``patch`` mode the whole image is
      augmented and then cropped; in ``resize`` mode it is resized first (image bilinear, mask and
      FOV nearest) and augmented at ``image_size``. The flips above come after it.

    All randomness, the augmentation pipeline's included, comes from one ``numpy.random.Generator``
    owned by the sampler; :meth:`state_dict` captures it with the epoch order and position, so a
    restored sampler draws the same batches.

    Args:
        dataset: sequence of :class:`~jmedseg.data.dataset.Sample` with masks.
        batch_size: samples per batch.
        mode: ``"patch"`` or ``"resize"``.
        patch_size: crop size, int or (height, width), for ``mode="patch"``.
        image_size: output size, int or (height, width), for ``mode="resize"``.
        foreground_bias: probability of centring a crop on a foreground pixel, in [0, 1].
        flip: enable flip / rotation augmentation.
        seed: seed of the sampler's generator.
        augment: None (no augmentation), or a pipeline spec: a preset name, a YAML file or a list of
            ops (see :func:`jmedseg.augment.resolve_ops`), or a :class:`~jmedseg.augment.Pipeline`
            whose ops are used (drawing from the sampler's generator). Needs a dataset with
            ``source(index)`` and ``apply_preprocess`` methods, such as :class:`~jmedseg.data.dataset.SegDataset`.
    """

    def __init__(
        self,
        dataset: Sequence[Sample],
        batch_size: int,
        mode: str = "patch",
        patch_size: int | Sequence[int] = 96,
        image_size: int | Sequence[int] = 256,
        foreground_bias: float = 0.5,
        flip: bool = True,
        seed: int = 0,
        augment: Pipeline | str | Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        where = getattr(dataset, "description", "dataset")
        if len(dataset) == 0:
            raise DataError(f"{where}: cannot sample training batches from an empty dataset")
        if getattr(dataset, "has_masks", True) is False:
            raise DataError(f"{where}: training needs masks, but this dataset has none")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"train.batch_size: must be a positive integer, got {batch_size!r}")
        if mode not in _MODES:
            raise ConfigError(f"data.mode: must be one of {', '.join(_MODES)}, got {mode!r}")
        if not isinstance(foreground_bias, (int, float)) or not 0.0 <= foreground_bias <= 1.0:
            raise ConfigError(f"data.foreground_bias: must be a number in [0, 1], got {foreground_bias!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.mode = mode
        self.patch_size = _pair(patch_size, "data.patch_size")
        self.image_size = _pair(image_size, "data.image_size")
        self.foreground_bias = float(foreground_bias)
        self.flip = bool(flip)
        self._rng = np.random.default_rng(seed)
        self.augment = None
        if augment is not None:
            spec = augment.ops if isinstance(augment, Pipeline) else augment
            self.augment = Pipeline(spec, rng=self._rng, source="data.augment")
            require_source_images(dataset, f"{where}: data.augment")
        self._epoch = 0
        self._position = 0
        self._order: np.ndarray | None = None

    @property
    def epoch_length(self) -> int:
        """Batches per epoch: ``ceil(len(dataset) / batch_size)``."""
        return -(-len(self.dataset) // self.batch_size)

    @property
    def epoch(self) -> int:
        """Epoch (0-based) of the last batch drawn; 0 before the first batch."""
        return self._epoch

    def __iter__(self) -> "TrainSampler":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        if self._order is None or self._position == self.epoch_length:
            if self._order is not None:
                self._epoch += 1
            permutation = self._rng.permutation(len(self.dataset))
            self._order = np.resize(permutation, self.epoch_length * self.batch_size)
            self._position = 0
        start = self._position * self.batch_size
        indices = self._order[start : start + self.batch_size]
        self._position += 1
        pairs = [self._draw(int(index)) for index in indices]
        images = np.stack([image.transpose(2, 0, 1) for image, _ in pairs]).astype(np.float32)
        masks = np.stack([mask for _, mask in pairs]).astype(np.int64)
        return images, masks

    def _draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.dataset[index] if self.augment is None else self.dataset.source(index)
        if sample.mask is None:
            raise DataError(f"{sample.name}: training needs a mask for every image")
        image, mask, fov = sample.image, sample.mask, sample.fov
        if self.mode == "resize":
            image, mask = self._resize(image), self._resize(mask.astype(np.uint8), cv2.INTER_NEAREST)
        if self.augment is not None:
            if self.mode == "resize" and fov is not None:
                fov = self._resize(fov.view(np.uint8), cv2.INTER_NEAREST).view(bool)
            image, mask, fov = self.augment(image, mask, fov)
            image = standardise(self.dataset.apply_preprocess(image), fov)
        if self.mode == "patch":
            image, mask = self._crop(image, mask)
        if self.flip:
            image, mask = self._flip_rotate(image, mask)
        return image, mask

    def _resize(self, array: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        height, width = self.image_size
        resized = cv2.resize(array, (width, height), interpolation=interpolation)
        return resized.reshape(height, width, -1) if array.ndim == 3 else resized

    def _crop(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        patch_h, patch_w = self.patch_size
        image, mask = _pad_to(image, mask, patch_h, patch_w)
        height, width = mask.shape
        top = left = None
        if self._rng.random() < self.foreground_bias:
            rows, cols = np.nonzero(mask)
            if rows.size:
                pick = self._rng.integers(rows.size)
                top = int(np.clip(rows[pick] - patch_h // 2, 0, height - patch_h))
                left = int(np.clip(cols[pick] - patch_w // 2, 0, width - patch_w))
        if top is None:
            top = int(self._rng.integers(height - patch_h + 1))
            left = int(self._rng.integers(width - patch_w + 1))
        return image[top : top + patch_h, left : left + patch_w], mask[top : top + patch_h, left : left + patch_w]

    def _flip_rotate(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self._rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        if mask.shape[0] == mask.shape[1]:
            turns = int(self._rng.integers(4))
            image, mask = np.rot90(image, turns, axes=(0, 1)), np.rot90(mask, turns, axes=(0, 1))
        return image, mask

    def state_dict(self) -> dict[str, Any]:
        """Generator state, epoch, position and current epoch order (plain Python values, JSON-safe)."""
        return {
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "epoch": self._epoch,
            "position": self._position,
            "order": None if self._order is None else self._order.tolist(),
            "dataset_size": len(self.dataset),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the sampler then continues exactly where the saved one was."""
        missing = {"rng", "epoch", "position", "order", "dataset_size", "batch_size"} - set(state)
        if missing:
            raise CheckpointError(f"sampler state: missing keys {', '.join(sorted(missing))}")
        if state["dataset_size"] != len(self.dataset) or state["batch_size"] != self.batch_size:
            raise CheckpointError(
                f"sampler state: saved for {state['dataset_size']} images in batches of {state['batch_size']}, "
                f"but this run has {len(self.dataset)} images in batches of {self.batch_size}"
            )
        try:
            self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"sampler state: invalid generator state ({exc})") from None
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._order = None if state["order"] is None else np.asarray(state["order"], dtype=np.int64)
