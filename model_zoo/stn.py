"""Spatial transformer front end (Jaderberg et al., 2015, https://arxiv.org/abs/1506.02025) for any model.

A small localisation network looks at a bilinearly downsampled copy of the image and predicts an
affine transform θ (2 x 3). The image is resampled with θ, the wrapped model segments the
resampled image, and its logits are resampled back with θ⁻¹, so the outputs — and therefore the
loss — are in the frame of the input image and its mask.

Conventions:

* θ acts on the normalised coordinates of ``affine_grid``/``grid_sample`` (``align_corners=False``:
  -1 and +1 are the outer edges of the border pixels, x to the right, y down): output pixel ``p``
  of the resampled image takes the input value at ``θ · [p, 1]``. Jittor's ``affine_grid`` and
  ``grid_sample`` follow PyTorch here, so the identity θ reproduces the input up to the float
  rounding of the sampling coordinates (a few 1e-5 on a standardised image).
* The image is resampled with zero padding: zero is the mean of a standardised image.
* The logits are resampled back with zero padding too: input pixels that the transformed view did
  not cover get logit 0 for every class, i.e. uniform probabilities (0.5 for a single sigmoid
  logit). Their loss is the constant of a "don't know" prediction (log C for cross-entropy), which
  discourages the localisation net from cropping away labelled content without giving the
  segmenter made-up gradients; border padding would instead copy confident edge predictions into
  regions the segmenter never saw.
* The final layer of the localisation net starts at weights 0 and bias ``[1, 0, 0, 0, 1, 0]``, so an
  untrained wrapper computes exactly what the wrapped model computes.
* ``identity_tolerance`` (default 0: off) snaps near-identity transforms to the identity: a θ that
  moves no corner of the image by more than the tolerance (in normalised coordinates) is applied
  as the identity, and a larger one is pulled toward the identity by that much, so the applied
  transform is continuous in θ. Why: a bilinear resampling at a sub-pixel offset blurs structures
  one or two pixels wide, and the STN resamples twice; where the localisation net learns nothing
  (on DRIVE it settles on one constant within a fraction of a pixel of the identity for every
  image) that constant costs Dice for nothing. The localisation net still gets the gradient of
  the θ it predicted (a straight-through estimate), so it can leave the dead zone when the task
  pays for it.
"""
from .backend import jt
from .base import InputSizeError, SegmentationModel
from .registry import ModelZooError

nn = jt.nn

__all__ = ["STNSegmenter", "wrap_with_stn", "invert_affine", "snap_to_identity", "IDENTITY_AFFINE"]

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""The identity θ, flattened row by row."""

_MIN_DET = 1e-6


def _identity_theta():
    """The identity θ as a ``1 x 2 x 3`` Var, broadcast against a batch of transforms."""
    return jt.array(IDENTITY_AFFINE, dtype="float32").reshape(1, 2, 3)


def invert_affine(theta):
    """Inverse of ``N x 2 x 3`` affine transforms (the top rows of the inverted 3 x 3 homogeneous matrices).

    For ``[[A, t], [0, 0, 1]]`` the inverse is ``[[A⁻¹, -A⁻¹ t], [0, 0, 1]]``, with ``A⁻¹`` in closed
    form. Determinants closer to 0 than 1e-6 are pushed to ±1e-6 so that a degenerate θ gives large
    but finite values instead of NaN.
    """
    a, b, tx = theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2]
    c, d, ty = theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2]
    det = a * d - b * c
    sign = jt.ternary(det >= 0, jt.ones_like(det), -jt.ones_like(det))
    det = jt.ternary(det.abs() < _MIN_DET, sign * _MIN_DET, det)
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    rows = [ia, ib, -(ia * tx + ib * ty), ic, id_, -(ic * tx + id_ * ty)]
    return jt.stack(rows, dim=1).reshape(-1, 2, 3)


class _Localisation(nn.Module):
    """Conv-ReLU-max-pool stages, then two fully connected layers predicting the 6 entries of θ."""

    def __init__(self, in_channels, size, channels, hidden):
        super().__init__()
        layers, width, side = [], in_channels, size
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2)]
            width, side = out, side // 2
        if side < 1:
            raise ModelZooError(f"STNSegmenter: localisation_size {size} is too small for "
                                f"{len(channels)} pooling stages (needs at least {2 ** len(channels)})")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(width * side * side, hidden), nn.ReLU())
        self.theta = nn.Linear(hidden, 6)
        self.theta.weight = jt.zeros((6, hidden), dtype="float32")
        self.theta.bias = jt.array(IDENTITY_AFFINE, dtype="float32")

    def execute(self, x):
        features = self.features(x)
        return self.theta(self.fc(features.reshape(features.shape[0], -1)))


def snap_to_identity(theta, tolerance):
    """``N x 2 x 3`` transforms pulled toward the identity by ``tolerance`` (see the module docstring).

    The distance of θ from the identity is the largest displacement, in normalised coordinates,
    of the image's four corners (an affine map moves no pixel further than its farthest corner).
    θ at distance ``d`` is applied as ``I + (θ - I) · max(0, 1 - tolerance / d)``. Gradients pass
    to ``theta`` as if it were applied unchanged.
    """
    identity = _identity_theta()
    delta = (theta - identity).detach()
    corners = [delta[:, :, 0] * x + delta[:, :, 1] * y + delta[:, :, 2] for x in (-1, 1) for y in (-1, 1)]
    distance = jt.stack([(c ** 2).sum(dim=1).sqrt() for c in corners], dim=1).max(dim=1)
    keep = (1.0 - tolerance / jt.maximum(distance, 1e-12)).maximum(0.0)
    applied = identity + delta * keep.reshape(-1, 1, 1)
    return applied + (theta - theta.detach())


class STNSegmenter(SegmentationModel):
    """Wrap a segmentation model with a learned affine spatial transformer; see the module docstring.

    Args:
        model: the segmentation model to wrap (any registered model).
        in_channels: image channels.
        localisation_size: side of the square, bilinearly downsampled copy of the input that the
            localisation net sees (default 64).
        localisation_channels: widths of its conv-pool stages (default ``(8, 16, 32)``).
        hidden: width of its hidden fully connected layer (default 32).
        identity_tolerance: transforms this close to the identity are applied as the identity
            (:func:`snap_to_identity`; default 0: every transform is applied as predicted).

    Returns logits ``N x num_classes x H x W`` in the input frame, like the wrapped model (a list of
    such maps in training mode when the wrapped model has deep supervision).
    :meth:`stn_penalty` gives the mean squared distance of the last θ from the identity.

    Example:
        >>> model = wrap_with_stn(create_model("unet", base_channels=8), in_channels=3)
        >>> model(jt.randn(1, 3, 72, 88)).shape
        [1, 2, 72, 88]
    """

    def __init__(self, model, in_channels, localisation_size=64, localisation_channels=(8, 16, 32), hidden=32,
                 identity_tolerance=0.0):
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ModelZooError(f"STNSegmenter: in_channels must be a positive integer, got {in_channels!r}")
        if isinstance(localisation_size, bool) or not isinstance(localisation_size, int) or localisation_size < 1:
            raise ModelZooError(f"STNSegmenter: localisation_size must be a positive integer, "
                                f"got {localisation_size!r}")
        if (isinstance(identity_tolerance, bool) or not isinstance(identity_tolerance, (int, float))
                or not identity_tolerance >= 0):
            raise ModelZooError(f"STNSegmenter: identity_tolerance must be a number >= 0, got {identity_tolerance!r}")
        self.model = model
        self.identity_tolerance = float(identity_tolerance)
        self.localisation_size = localisation_size
        self.localisation = _Localisation(in_channels, localisation_size, tuple(localisation_channels), hidden)
        self.size_divisor = model.size_divisor
        self.min_input_size = model.min_input_size
        self.stn_args = dict(in_channels=in_channels, localisation_size=localisation_size,
                             localisation_channels=list(localisation_channels), hidden=hidden,
                             identity_tolerance=self.identity_tolerance)
        # Checkpoint metadata describes the wrapped model; stn_args describes the wrapper.
        if hasattr(model, "model_name"):
            self.model_name = model.model_name
            self.model_args = dict(model.model_args)
        self._theta = None

    def get_encoder(self):
        """The wrapped model's encoder."""
        return self.model.get_encoder()

    def predict_theta(self, x):
        """The ``N x 2 x 3`` affine transforms the localisation net predicts for images ``x``."""
        small = nn.interpolate(x, size=(self.localisation_size, self.localisation_size), mode="bilinear",
                               align_corners=False)
        return self.localisation(small).reshape(x.shape[0], 2, 3)

    def execute(self, x):
        if x.ndim != 4:
            raise InputSizeError(f"STNSegmenter: expected an N x C x H x W input, got shape {list(x.shape)}")
        n, c, h, w = x.shape
        theta = self.predict_theta(x)
        self._theta = theta
        if self.identity_tolerance:
            theta = snap_to_identity(theta, self.identity_tolerance)
        grid = nn.affine_grid(theta, (n, c, h, w), align_corners=False)
        warped = nn.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = self.model(warped)
        back = nn.affine_grid(invert_affine(theta), (n, 1, h, w), align_corners=False)

        def to_input_frame(logits):
            return nn.grid_sample(logits, back, mode="bilinear", padding_mode="zeros", align_corners=False)

        if isinstance(out, (list, tuple)):
            return [to_input_frame(o) for o in out]
        return to_input_frame(out)

    def stn_penalty(self):
        """Mean over the batch of ``||θ - I||²`` (squared Frobenius norm) for the last forward pass, of
        the θ the localisation net predicted (before :func:`snap_to_identity`).

        Add ``weight * model.stn_penalty()`` to the loss to keep the transforms near the identity.
        Returns 0 before the first forward pass.
        """
        if self._theta is None:
            return jt.zeros((1,), dtype="float32").sum()
        return ((self._theta - _identity_theta()) ** 2).sum(dims=(1, 2)).mean()


def wrap_with_stn(model, in_channels=None, **kwargs):
    """Wrap ``model`` in an :class:`STNSegmenter`.

    ``in_channels`` defaults to the one recorded by ``create_model`` (``model.model_args``);
    other keyword arguments go to :class:`STNSegmenter`.
    """
    if in_channels is None:
        in_channels = getattr(model, "model_args", {}).get("in_channels")
        if in_channels is None:
            raise ModelZooError("wrap_with_stn: in_channels is not recorded on the model; pass it explicitly")
    return STNSegmenter(model, in_channels, **kwargs)
