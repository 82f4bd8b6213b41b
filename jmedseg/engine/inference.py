"""Inference on whole images: one pass, or overlapping tiles blended with a Gaussian window.

Probabilities come from softmax over the class dimension (``num_classes >= 2``) or a sigmoid
(``num_classes == 1``, a single foreground logit).
"""
import numpy as np

from model_zoo.backend import jt

__all__ = ["predict_probs", "foreground_prob", "labels_from_probs", "gaussian_window"]


def _activate(logits):
    if logits.shape[1] == 1:
        return logits.sigmoid()
    return jt.nn.softmax(logits, dim=1)


def gaussian_window(size, sigma_scale=0.125):
    """A ``size x size`` weight map peaking at the centre (σ = size/8), minimum kept above 0."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (coords / (size * sigma_scale)) ** 2)
    window = np.outer(g, g)
    window /= window.max()
    return np.maximum(window, 1e-3).astype(np.float32)


def _forward(model, batch, tta):
    """Mean probability over the identity and, with ``tta``, the horizontal/vertical flips."""
    x = jt.array(batch)
    probs = _activate(model(x)).numpy()
    if tta:
        for axis in (3, 2):
            flipped = _activate(model(x[:, :, :, ::-1] if axis == 3 else x[:, :, ::-1, :])).numpy()
            probs += np.flip(flipped, axis=axis)
        probs /= 3
    return probs


def predict_probs(model, image, tile_size=None, overlap=0.5, tta=False, batch_size=4):
    """Class probabilities ``C x H x W`` for one ``H x W x C_in`` float image.

    Args:
        model: a segmentation model (put in eval mode here).
        image: float32 array ``H x W x C_in`` (already normalised as in training).
        tile_size: ``None`` for a single pass over the whole image, else the side of square tiles
            moved with stride ``tile_size * (1 - overlap)``; overlapping predictions are averaged
            with Gaussian weights (images smaller than a tile are padded).
        tta: also average horizontally and vertically flipped predictions.
    """
    model.eval()
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    with jt.no_grad():
        if tile_size is None:
            return _forward(model, chw[None], tta)[0]
        return _sliding_window(model, chw, tile_size, overlap, tta, batch_size)


def _tile_starts(length, tile, stride):
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def _sliding_window(model, chw, tile, overlap, tta, batch_size):
    if not 0 <= overlap < 1:
        raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")
    c, h, w = chw.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    padded = np.pad(chw, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "constant")
    H, W = padded.shape[1:]
    stride = max(1, int(round(tile * (1 - overlap))))
    window = gaussian_window(tile)
    origins = [(y, x) for y in _tile_starts(H, tile, stride) for x in _tile_starts(W, tile, stride)]
    total, weight = None, np.zeros((H, W), np.float32)
    for i in range(0, len(origins), batch_size):
        chunk = origins[i:i + batch_size]
        batch = np.stack([padded[:, y:y + tile, x:x + tile] for y, x in chunk])
        probs = _forward(model, batch, tta)
        if total is None:
            total = np.zeros((probs.shape[1], H, W), np.float32)
        for (y, x), p in zip(chunk, probs):
            total[:, y:y + tile, x:x + tile] += p * window
            weight[y:y + tile, x:x + tile] += window
    return (total / weight)[:, :h, :w]


def foreground_prob(probs):
    """The foreground probability map of a binary problem (``C`` is 1 or 2)."""
    if probs.shape[0] > 2:
        raise ValueError("foreground_prob is for binary problems; use labels_from_probs")
    return probs[-1]


def labels_from_probs(probs, threshold=0.5):
    """Class labels ``H x W``: foreground ≥ threshold for binary problems, argmax otherwise."""
    if probs.shape[0] <= 2:
        return (foreground_prob(probs) >= threshold).astype(np.int64)
    return probs.argmax(axis=0).astype(np.int64)
