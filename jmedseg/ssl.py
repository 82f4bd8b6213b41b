"""MoCo v2 self-supervised pretraining of a segmentation model's encoder.

MoCo (He et al., 2020, https://arxiv.org/abs/1911.05722) with the v2 changes (Chen et al., 2020,
https://arxiv.org/abs/2003.04297): an MLP projection head, blur augmentation and temperature 0.2.

* Query branch: ``model.get_encoder()``, global average pooling of its deepest feature map, an MLP
  head (Linear, ReLU, Linear), L2 normalisation. Key branch: a copy of both, updated only by the
  exponential moving average ``θ_k ← m·θ_k + (1 − m)·θ_q`` of the trainable parameters (BatchNorm
  running statistics are not averaged: each branch keeps its own, as in the reference code). Key
  parameters are stop-grad Vars and are left out of the optimizer.
* :class:`KeyQueue`: a FIFO memory bank of the last K keys (L2-normalised), initialised with random
  unit vectors; any K works (writes wrap around).
* :func:`info_nce_loss`: ``logits = [q·k⁺, q·queue] / τ`` and cross-entropy with target 0,
  written as ``-log_softmax(logits, dim=1)[:, 0]``.
* BatchNorm leakage: with one BatchNorm batch, a query and its key would be normalised with
  statistics of the same set of images, which lets the network match pairs through the batch
  statistics instead of the content. MoCo shuffles keys across GPUs; in one process we emulate
  that ("shuffle BN"): both branches run the batch as ``bn_splits`` separate chunks (each chunk
  its own BatchNorm batch, like one GPU each), and the key batch is randomly permuted before it is
  chunked and un-permuted after. A query and its positive key are then normalised with statistics
  of different random subsets of images. ``bn_splits=1`` turns this off.
* Under ``mpirun`` (:mod:`jmedseg.distributed`) each rank runs its shard of the global batch;
  gradients are averaged over ranks, so the query branches stay equal and so do their EMA key
  branches. BatchNorm is per rank there (as per GPU in MoCo), not synchronised: the ranks'
  ``bn_splits`` chunks are the BatchNorm batches and the key shuffle stays within a rank. The keys
  of all ranks are gathered, in rank order, before they are enqueued, so every rank holds the same
  queue, the one a single process would build from the global batch.
* Augmentation (:class:`MoCoAugment`, OpenCV/NumPy, seeded): random resized crop (scale 0.2–1,
  aspect 3/4–4/3), colour jitter with probability 0.8, grayscale with probability 0.2, Gaussian
  blur with probability 0.5, horizontal flip. It works on standardised images (what
  :func:`jmedseg.data.load_image` returns, the same input as fine-tuning), so the torchvision
  colour jitter is restated in standard-deviation units: brightness adds an offset of up to ±0.4,
  contrast scales around the mean luminance by 0.6–1.4, saturation scales the distance from the
  gray value by 0.6–1.4, hue rotates the colours about the gray axis by up to ±0.1 turn (the last
  two only for 3-channel images), applied in random order. Blur sigma is drawn from 0.1–2.0 px at
  224 px (MoCo v2's crop size) and scaled to the view size.

Resumable state (:meth:`MoCo.save_state`, the ``last.npz`` of ``ssl_pretrain/moco.py``): both
branches under ``model/`` (BatchNorm statistics included), the optimizer's buffers, the queue under
``queue/keys`` and, in the metadata, the queue pointer and the key-shuffling generator, so a resumed
run continues with the very same numbers.

Encoder checkpoints use the project's safe ``.npz`` format (:mod:`jmedseg.checkpoint`): the
encoder's state dict under ``model/``, and metadata ``{"model": {"name", "args"}, "weights":
"encoder", "ssl": {...hyper-parameters and final statistics}}``. :func:`load_encoder_weights` loads
one strictly into ``model.get_encoder()``.
"""
import copy
import json
import math
from pathlib import Path

import cv2
import numpy as np

from model_zoo.backend import jt

from . import distributed as dist
from .checkpoint import load_model_state, load_optimizer_state, read_checkpoint, save_checkpoint
from .data import IMAGE_EXTENSIONS, load_image
from .errors import CheckpointError, ConfigError, DataError

nn = jt.nn

__all__ = ["MoCo", "MoCoAugment", "TwoViewSampler", "KeyQueue", "ProjectionHead", "info_nce_loss",
           "find_images", "load_images", "load_encoder_weights", "ENCODER_WEIGHTS", "MOCO_STATE"]

ENCODER_WEIGHTS = "encoder"
"""The ``weights`` metadata value of an encoder-only checkpoint."""

MOCO_STATE = "moco_state"
"""The ``weights`` metadata value of a resumable MoCo checkpoint (both branches, queue, optimizer)."""

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_REFERENCE_CROP = 224  # MoCo v2's view size, the scale its blur sigmas are given at


# -- images ----------------------------------------------------------------------------------------
def find_images(root, split="train"):
    """Image files for pretraining: ``<root>/<split>/images/*`` when that folder exists, else ``<root>/*``.

    Masks are never read, so unlabelled folders work. Hidden files and other extensions are skipped;
    the result is sorted by file name.

    Raises:
        DataError: ``root`` is missing or holds no image file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    folder = root / split / "images"
    if not folder.is_dir():
        folder = root
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}); "
                        f"expected a folder of images or a dataset root with {split}/images/")
    return files


def load_images(paths, in_channels=3, preprocess="none"):
    """Read images with :func:`jmedseg.data.load_image`: float32 ``H x W x in_channels``, standardised."""
    return [load_image(p, in_channels=in_channels, preprocess=preprocess) for p in paths]


# -- augmentation ----------------------------------------------------------------------------------
def _hue_rotation(angle):
    """3 x 3 rotation by ``angle`` radians about the gray axis (1, 1, 1)/√3 (Rodrigues' formula)."""
    u = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return (math.cos(angle) * np.eye(3) + math.sin(angle) * cross
            + (1 - math.cos(angle)) * np.outer(u, u)).astype(np.float32)


def _luminance(image):
    """``H x W x 1`` luminance of an ``H x W x C`` image (the image itself when C = 1)."""
    return image @ _LUMA[:, None] if image.shape[2] == 3 else image


class MoCoAugment:
    """One random MoCo v2 view of a standardised image; see the module docstring for the recipe.

    Args:
        size: side of the square output view in pixels.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height).
        jitter: (brightness, contrast, saturation, hue) strengths.
        jitter_p, gray_p, blur_p, flip_p: probabilities of colour jitter, grayscale, blur, flip.
        blur_sigma: range of the blur sigma in pixels at 224 px, scaled to ``size``.

    Calling it with ``(image H x W x C float32, numpy Generator)`` returns a ``C x size x size``
    float32 view; all randomness comes from the generator.
    """

    def __init__(self, size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), jitter=(0.4, 0.4, 0.4, 0.1),
                 jitter_p=0.8, gray_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0), flip_p=0.5):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"augmentation size must be a positive integer, got {size!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"augmentation scale must satisfy 0 < min <= max <= 1, got {scale!r}")
        self.size, self.scale, self.log_ratio = size, scale, (math.log(ratio[0]), math.log(ratio[1]))
        self.jitter, self.jitter_p, self.gray_p, self.blur_p, self.flip_p = jitter, jitter_p, gray_p, blur_p, flip_p
        self.blur_sigma = (blur_sigma[0] * size / _REFERENCE_CROP, blur_sigma[1] * size / _REFERENCE_CROP)

    def __call__(self, image, rng):
        view = self._resized_crop(image, rng)
        if rng.random() < self.jitter_p:
            view = self._colour_jitter(view, rng)
        if view.shape[2] == 3 and rng.random() < self.gray_p:
            view = np.repeat(_luminance(view), 3, axis=2)
        if rng.random() < self.blur_p:
            view = cv2.GaussianBlur(view, (0, 0), sigmaX=rng.uniform(*self.blur_sigma)).reshape(view.shape)
        if rng.random() < self.flip_p:
            view = view[:, ::-1]
        return np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32)

    def _resized_crop(self, image, rng):
        """A crop of random area and aspect ratio (10 tries, then the whole image) resized to ``size``."""
        h, w, c = image.shape
        top, left, ch, cw = 0, 0, h, w
        for _ in range(10):
            area = h * w * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            tw, th = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < tw <= w and 0 < th <= h:
                top, left, ch, cw = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1)), th, tw
                break
        crop = np.ascontiguousarray(image[top:top + ch, left:left + cw])
        shrinking = ch > self.size and cw > self.size
        resized = cv2.resize(crop, (self.size, self.size),
                             interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        return resized.reshape(self.size, self.size, c)

    def _colour_jitter(self, view, rng):
        brightness, contrast, saturation, hue = self.jitter
        colour = view.shape[2] == 3
        for op in rng.permutation(4):
            if op == 0 and brightness:
                view = view + np.float32(rng.uniform(-brightness, brightness))
            elif op == 1 and contrast:
                mean = _luminance(view).mean()
                view = mean + np.float32(rng.uniform(1 - contrast, 1 + contrast)) * (view - mean)
            elif op == 2 and saturation and colour:
                gray = _luminance(view)
                view = gray + np.float32(rng.uniform(1 - saturation, 1 + saturation)) * (view - gray)
            elif op == 3 and hue and colour:
                view = view @ _hue_rotation(2 * math.pi * rng.uniform(-hue, hue)).T
        return view.astype(np.float32)


class TwoViewSampler:
    """Infinite iterator of ``(queries, keys)``: two independent augmented views of the same instances.

    Images are visited in seeded random epochs (a new permutation when one runs out), so a batch
    may span two epochs. An instance is the whole image, or with ``region`` a random
    ``region x region`` window of it (clipped to the image) drawn anew at each visit: both views are
    crops of that window. A few large images (DRIVE has 20) then give many distinct instances, so
    the queue's negatives are other windows rather than older keys of the query's own image. Each
    item of the batch pair is ``N x C x size x size`` float32.

    Args:
        images: list of ``H x W x C`` float32 images (sizes may differ).
        batch_size: instances per batch.
        augment: a :class:`MoCoAugment`.
        seed: seed of the sampler's generator.
        region: side of the instance windows in pixels, or None for whole images.
    """

    def __init__(self, images, batch_size, augment, seed=0, region=None):
        if not images:
            raise DataError("no images to sample from")
        if region is not None and (isinstance(region, bool) or not isinstance(region, int) or region < 1):
            raise ConfigError(f"instance region must be a positive integer or None, got {region!r}")
        self.images, self.batch_size, self.augment, self.region = list(images), int(batch_size), augment, region
        self.rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)

    def __iter__(self):
        return self

    def __next__(self):
        while len(self._order) < self.batch_size:
            self._order = np.concatenate([self._order, self.rng.permutation(len(self.images))])
        batch, self._order = self._order[:self.batch_size], self._order[self.batch_size:]
        instances = [self._window(self.images[i]) for i in batch]
        queries = np.stack([self.augment(instance, self.rng) for instance in instances])
        keys = np.stack([self.augment(instance, self.rng) for instance in instances])
        return queries, keys

    def _window(self, image):
        if self.region is None:
            return image
        height, width = min(self.region, image.shape[0]), min(self.region, image.shape[1])
        top = int(self.rng.integers(0, image.shape[0] - height + 1))
        left = int(self.rng.integers(0, image.shape[1] - width + 1))
        return image[top:top + height, left:left + width]

    def state_dict(self):
        """Generator state and the rest of the current epoch (JSON-safe)."""
        return {"rng": copy.deepcopy(self.rng.bit_generator.state), "order": self._order.tolist(),
                "num_images": len(self.images), "batch_size": self.batch_size, "region": self.region}

    def load_state_dict(self, state):
        """Continue exactly where the sampler that wrote ``state`` was."""
        saved = (state.get("num_images"), state.get("batch_size"), state.get("region"))
        if saved != (len(self.images), self.batch_size, self.region):
            raise CheckpointError(f"sampler state: saved for {saved[0]} images in batches of {saved[1]} with "
                                  f"instance region {saved[2]}, but this run has {len(self.images)} images in "
                                  f"batches of {self.batch_size} with instance region {self.region}")
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._order = np.asarray(state["order"], dtype=np.int64)


# -- MoCo ------------------------------------------------------------------------------------------
def _l2_normalise_rows(array):
    return (array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class KeyQueue:
    """FIFO memory bank of ``size`` L2-normalised keys of dimension ``dim``.

    Starts with random unit vectors (seeded). :meth:`enqueue` normalises the rows it is given and
    overwrites the oldest entries, wrapping around the end, so any ``size`` works; a batch larger
    than the queue keeps only its last ``size`` rows. ``keys`` is the storage (ring order, what the
    loss uses: order does not matter there); :meth:`ordered` gives the entries oldest first.
    """

    def __init__(self, size, dim, seed=0):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"queue size must be a positive integer, got {size!r}")
        self.keys = _l2_normalise_rows(np.random.default_rng(seed).standard_normal((size, dim)))
        self.ptr = 0

    def __len__(self):
        return len(self.keys)

    def enqueue(self, keys):
        keys = _l2_normalise_rows(np.asarray(keys, dtype=np.float32))[-len(self.keys):]
        index = (self.ptr + np.arange(len(keys))) % len(self.keys)
        self.keys[index] = keys
        self.ptr = int((self.ptr + len(keys)) % len(self.keys))

    def ordered(self):
        """The entries from oldest to newest."""
        return np.roll(self.keys, -self.ptr, axis=0)


def info_nce_loss(q, k, negatives, temperature):
    """InfoNCE of queries ``q`` (N x D) against positives ``k`` (N x D) and ``negatives`` (K x D).

    ``logits = [q·k, q·negatives] / temperature`` (N x (1 + K)); the loss is the mean
    cross-entropy with target 0, ``-log_softmax(logits, dim=1)[:, 0].mean()``.

    Returns:
        ``(loss, logits)`` as Jittor Vars.
    """
    if isinstance(negatives, np.ndarray):
        negatives = jt.array(negatives)
    positive = (q * k).sum(1, keepdims=True)
    logits = jt.concat([positive, jt.matmul(q, negatives.transpose(1, 0))], dim=1) / temperature
    loss = -nn.log_softmax(logits, dim=1)[:, 0].mean()
    return loss, logits


class ProjectionHead(nn.Module):
    """MoCo v2's MLP head: Linear(in, hidden), ReLU, Linear(hidden, out)."""

    def __init__(self, in_features, hidden=2048, out=128):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def execute(self, x):
        return self.fc2(nn.relu(self.fc1(x)))


class _Embedder(nn.Module):
    """Encoder, global average pooling of its deepest feature map, projection head, L2 normalisation."""

    def __init__(self, encoder, head):
        super().__init__()
        self.encoder, self.head = encoder, head

    def execute(self, x):
        z = self.head(self.encoder(x)[-1].mean([2, 3]))
        return z / (z * z).sum(1, keepdims=True).sqrt().maximum(1e-12)


def _feature_channels(encoder, in_channels, side):
    """Channels of the encoder's deepest feature map, from one no-grad forward pass in eval mode."""
    encoder.eval()  # BatchNorm must not learn running statistics from the probe
    with jt.no_grad():
        channels = encoder(jt.zeros((1, in_channels, side, side)))[-1].shape[1]
    encoder.train()
    return int(channels)


class MoCo(nn.Module):
    """MoCo v2 around the encoder of a registered segmentation model; see the module docstring.

    Args:
        model: a model built by :func:`model_zoo.create_model`; its encoder becomes the query encoder
            (trained in place); a deep copy of it and of the projection head forms the key branch.
        dim: output dimension of the projection head (128).
        hidden_dim: hidden width of the projection head (2048).
        queue_size: number of negative keys K (4096).
        momentum: EMA coefficient m of the key encoder (0.999).
        temperature: softmax temperature τ (0.2).
        bn_splits: BatchNorm chunks per batch for shuffle-BN emulation (2; 1 = off). The batch
            size must be a multiple of it.
        seed: seed of the queue's initial keys and of the key shuffling.

    Attributes:
        query, key: the two branches (encoder + head + normalisation).
        queue: the :class:`KeyQueue`.

    Optimise :meth:`query_parameters` and call :meth:`train_step` once per batch.
    """

    def __init__(self, model, dim=128, hidden_dim=2048, queue_size=4096, momentum=0.999, temperature=0.2,
                 bn_splits=2, seed=0):
        super().__init__()
        if not hasattr(model, "model_name"):
            raise ConfigError("MoCo: the model must be built with model_zoo.create_model (checkpoints record "
                              "its name and arguments)")
        if not 0 <= momentum < 1:
            raise ConfigError(f"MoCo: momentum must be in [0, 1), got {momentum!r}")
        if not temperature > 0:
            raise ConfigError(f"MoCo: temperature must be > 0, got {temperature!r}")
        if isinstance(bn_splits, bool) or not isinstance(bn_splits, int) or bn_splits < 1:
            raise ConfigError(f"MoCo: bn_splits must be a positive integer, got {bn_splits!r}")
        self.model_name, self.model_args = model.model_name, dict(model.model_args)
        self.size_divisor, self.min_input_size = model.size_divisor, model.min_input_size
        self.momentum, self.temperature, self.bn_splits = float(momentum), float(temperature), bn_splits
        self.hparams = dict(dim=dim, hidden_dim=hidden_dim, queue_size=queue_size, momentum=self.momentum,
                            temperature=self.temperature, bn_splits=bn_splits)
        encoder = model.get_encoder()
        side = math.ceil(max(self.min_input_size, self.size_divisor) / self.size_divisor) * self.size_divisor
        channels = _feature_channels(encoder, self.model_args.get("in_channels", 3), side)
        self.query = _Embedder(encoder, ProjectionHead(channels, hidden_dim, dim))
        self.key = copy.deepcopy(self.query)  # Jittor deep-copies each Var's data, detached
        query_state, key_state = self.query.state_dict(), self.key.state_dict()
        self._ema_pairs = [(key_state[name], var) for name, var in query_state.items() if not var.is_stop_grad()]
        for var in key_state.values():
            var.stop_grad()
        jt.sync(list(key_state.values()))  # materialise the copies before the query starts changing
        self.queue = KeyQueue(queue_size, dim, seed=seed)
        self._rng = np.random.default_rng([seed, 1])
        if dist.is_distributed():
            for module in self.modules():
                if isinstance(module, nn.BatchNorm):
                    module.sync = False
            dist.broadcast_state(self)

    @property
    def encoder(self):
        """The query encoder: the weights pretraining produces."""
        return self.query.encoder

    def query_parameters(self):
        """The trainable parameters (query encoder and head) to hand to the optimizer."""
        return [p for p in self.query.parameters() if not p.is_stop_grad()]

    def replicated_state(self):
        """The state every MPI rank must hold identically, flattened: the queue and the key branch's
        EMA-updated weights (BatchNorm running statistics are per rank)."""
        return np.concatenate([self.queue.keys.ravel()] + [key.numpy().ravel() for key, _ in self._ema_pairs])

    def momentum_update(self):
        """``θ_k ← m·θ_k + (1 − m)·θ_q`` for every trainable parameter, without gradients."""
        m = self.momentum
        with jt.no_grad():
            for key_var, query_var in self._ema_pairs:
                key_var.update((key_var * m + query_var.detach() * (1 - m)).stop_grad())
        jt.sync([k for k, _ in self._ema_pairs])

    def _embed(self, branch, images):
        chunk = len(images) // self.bn_splits
        parts = [branch(jt.array(images[i * chunk:(i + 1) * chunk])) for i in range(self.bn_splits)]
        return parts[0] if len(parts) == 1 else jt.concat(parts, dim=0)

    def embed_keys(self, images):
        """L2-normalised key embeddings (numpy, N x dim) of ``images``, with shuffle-BN emulation."""
        order = self._rng.permutation(len(images))
        with jt.no_grad():
            shuffled = self._embed(self.key, images[order]).numpy()
        keys = np.empty_like(shuffled)
        keys[order] = shuffled
        return keys

    def train_step(self, queries, keys, optimizer):
        """One MoCo step on a batch of two views (numpy ``N x C x S x S`` each).

        Order as in the reference code: query embeddings, EMA update of the key branch, key
        embeddings, loss, optimizer step on the query branch, enqueue the keys.

        Returns:
            ``(loss, top1)``: the InfoNCE loss and the fraction of queries whose positive key
            scores highest among [positive, queue] (instance-discrimination accuracy).
        """
        n = len(queries)
        if n % self.bn_splits:
            raise ConfigError(f"MoCo: batch size {n} must be a multiple of bn_splits {self.bn_splits}")
        q = self._embed(self.query, queries)
        self.momentum_update()
        k = self.embed_keys(keys)
        loss, logits = info_nce_loss(q, jt.array(k), self.queue.keys, self.temperature)
        jt.sync([loss, logits])
        top1 = float((logits.numpy().argmax(axis=1) == 0).mean())
        optimizer.step(loss)
        if dist.is_distributed():
            jt.sync_all()  # run the gradient all-reduces now, in the same order on every rank
        self.queue.enqueue(dist.gather_rows(k))
        loss, top1 = dist.mean_over_ranks([loss.item(), top1])
        return float(loss), float(top1)

    def save_state(self, path, optimizer, **meta):
        """Write everything a resumed run needs: both branches (BatchNorm statistics included), the
        optimizer's buffers, the queue and the key-shuffling generator; ``meta`` is stored beside them."""
        meta = dict(meta, model={"name": self.model_name, "args": self.model_args}, weights=MOCO_STATE,
                    moco=self.hparams, queue_ptr=self.queue.ptr, shuffle_rng=self._rng.bit_generator.state)
        save_checkpoint(path, self, meta, optimizer=optimizer, extra_arrays={"queue/keys": self.queue.keys})

    def load_state(self, path, optimizer):
        """Restore a :meth:`save_state` checkpoint written with the same model and MoCo settings.

        Returns:
            the checkpoint's metadata.

        Raises:
            CheckpointError: unreadable file, not a MoCo state, or written with other settings.
        """
        meta, arrays = read_checkpoint(path)
        if meta.get("weights") != MOCO_STATE:
            raise CheckpointError(f"{path}: not a MoCo training state (expected the last.npz of ssl_pretrain/moco.py)")
        mine = json.loads(json.dumps({"model": {"name": self.model_name, "args": self.model_args},
                                      "moco": self.hparams}))  # tuples come back from JSON as lists
        saved = {"model": meta["model"], "moco": meta.get("moco")}
        if saved != mine:
            raise CheckpointError(f"{path}: written for {saved}, not {mine}")
        load_model_state(self, arrays, source=str(path))
        load_optimizer_state(optimizer, arrays, meta, source=str(path))
        keys = arrays.get("queue/keys")
        if keys is None or keys.shape != self.queue.keys.shape:
            raise CheckpointError(f"{path}: queue/keys missing or of shape "
                                  f"{None if keys is None else list(keys.shape)}, expected {list(self.queue.keys.shape)}")
        self.queue.keys = keys.astype(np.float32)
        self.queue.ptr = int(meta["queue_ptr"])
        self._rng.bit_generator.state = meta["shuffle_rng"]
        jt.sync_all()
        return meta

    def save_encoder(self, path, **extra):
        """Write the query encoder as an encoder checkpoint; ``extra`` goes into ``meta["ssl"]``."""
        meta = {"model": {"name": self.model_name, "args": self.model_args}, "weights": ENCODER_WEIGHTS,
                "ssl": dict(method="moco_v2", **self.hparams, **extra)}
        save_checkpoint(path, self.encoder, meta)


def load_encoder_weights(model, path):
    """Load an encoder checkpoint (written by :meth:`MoCo.save_encoder`) strictly into ``model.get_encoder()``.

    The checkpoint must come from the same model name; the tensors must match the encoder's state
    dict exactly (names and shapes), so other arguments may differ only where they leave the
    encoder unchanged (``num_classes``, decoder options). BatchNorm running statistics are loaded too.

    Returns:
        the number of tensors loaded.

    Raises:
        CheckpointError: unreadable file, not an encoder checkpoint, another model, or mismatched tensors.
    """
    meta, arrays = read_checkpoint(path)
    if meta.get("weights") != ENCODER_WEIGHTS:
        raise CheckpointError(f"{path}: not an encoder checkpoint (expected one written by ssl_pretrain/moco.py; "
                              f"load full-model checkpoints with load_checkpoint)")
    spec = meta["model"]
    name = getattr(model, "model_name", None)
    if name is not None and spec["name"] != name:
        raise CheckpointError(f"{path}: holds the encoder of model {spec['name']!r}, "
                              f"which cannot initialise model {name!r}")
    source = f"{path} (encoder of {spec['name']} {spec.get('args', {})}, model args " \
             f"{getattr(model, 'model_args', '?')})"
    return load_model_state(model.get_encoder(), arrays, source=source)
