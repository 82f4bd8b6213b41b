"""The base class every segmentation model derives from."""
import math

from .backend import jt
from .registry import ModelZooError

nn = jt.nn

__all__ = ["SegmentationModel", "InputSizeError"]


class InputSizeError(ModelZooError):
    """The input is smaller than the network can process."""


class SegmentationModel(nn.Module):
    """Base class: pads inputs to the network's size divisor and crops logits back.

    Subclasses set ``size_divisor`` and ``min_input_size``, build ``self.encoder`` (a module whose
    ``execute(x)`` returns a list of feature maps, deepest last) and implement
    ``forward_logits(x)``, which returns logits, or in training mode optionally a list
    ``[main, aux1, ...]`` of deep-supervision outputs (any resolution; they are resized to the
    input). ``execute`` returns logits ``N x num_classes x H x W`` at the input resolution — in
    eval mode always the main output only.

    ``detail_stride`` is the stride of the finest feature map whose detail reaches the logits: 1
    (the default) when full-resolution features reach the classifier, ``s`` when the logits are
    upsampled from stride-``s`` features alone (bilinearly, or by learned layers that get no finer
    skip features). Such a network cannot place structures narrower than about ``s`` pixels;
    ``tests/test_trainability.py`` takes that into account.
    """

    size_divisor = 1
    min_input_size = 32
    detail_stride = 1

    def get_encoder(self):
        """The encoder submodule, whose weights self-supervised pretraining learns and transfers."""
        return self.encoder

    def execute(self, x):
        if x.ndim != 4:
            raise InputSizeError(f"{type(self).__name__}: expected an N x C x H x W input, got shape {list(x.shape)}")
        h, w = x.shape[2], x.shape[3]
        if min(h, w) < self.min_input_size:
            raise InputSizeError(f"{type(self).__name__}: input {h}x{w} is smaller than the minimum "
                                 f"{self.min_input_size}x{self.min_input_size}")
        d = self.size_divisor
        ph, pw = math.ceil(h / d) * d - h, math.ceil(w / d) * d - w
        if ph or pw:
            x = nn.pad(x, [0, pw, 0, ph], mode="reflect" if min(h, w) > max(ph, pw) else "constant")
        out = self.forward_logits(x)
        hp, wp = h + ph, w + pw
        if isinstance(out, (list, tuple)):
            if not self.is_training():
                return self._to_input_frame(out[0], hp, wp, h, w)
            return [self._to_input_frame(o, hp, wp, h, w) for o in out]
        return self._to_input_frame(out, hp, wp, h, w)

    @staticmethod
    def _to_input_frame(logits, hp, wp, h, w):
        """Resize logits to the padded input size if needed, then crop the padding away."""
        if logits.shape[2] != hp or logits.shape[3] != wp:
            logits = nn.interpolate(logits, size=(hp, wp), mode="bilinear", align_corners=False)
        return logits[:, :, :h, :w] if (hp, wp) != (h, w) else logits
