"""Segmentation losses for N x C x H x W logits and N x H x W integer class-index targets.

Conventions shared by every loss here:

* ``C >= 2`` logits are turned into probabilities with a softmax over the class dim (``dim=1``);
  ``C == 1`` is a binary model with a single foreground logit and a sigmoid, targets 0/1.
* Targets are validated on every call: labels must lie in ``[0, C)`` (``{0, 1}`` when ``C == 1``)
  apart from ``ignore_index``; a 0/255 mask is rejected with a hint. Shape errors and bad labels
  raise ``ValueError`` with a one-line message naming the loss. This costs one tiny fetch of the
  target's min/max per call (the target only, not the model's graph).
* Pixels equal to ``ignore_index`` count nowhere: not in the numerator, not in the denominator.
  When every pixel is ignored a loss returns 0 (and a zero gradient) rather than NaN.
* Each loss returns a scalar ``jt.Var``.

``build_loss`` turns a config mapping such as ``{"ce": 0.5, "dice": 0.5}`` into a
``WeightedSumLoss``; ``DeepSupervisionLoss`` applies a loss to a main output plus auxiliary outputs.
"""
import difflib
import inspect
import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from model_zoo.backend import jt

from .errors import ConfigError

nn = jt.nn

__all__ = [
    "check_labels", "check_logits_target", "SegLoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
    "FocalLoss", "DiceLoss", "IoULoss", "TverskyLoss", "WeightedSumLoss", "DeepSupervisionLoss",
    "build_loss", "LOSSES",
]


def _shape(var):
    return list(var.shape)


def check_logits_target(logits, target, name="loss"):
    """Check that logits are N x C x H x W and the target N x H x W with the same N, H and W.

    Raises:
        ValueError: with a one-line message naming the loss ``name`` and both shapes.
    """
    if len(logits.shape) != 4:
        raise ValueError(f"loss '{name}': logits must be 4-D N x C x H x W, got shape {_shape(logits)}")
    if len(target.shape) != 3:
        raise ValueError(f"loss '{name}': target must be 3-D N x H x W class indices, got shape "
                         f"{_shape(target)}")
    n, _, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise ValueError(f"loss '{name}': logits shape {_shape(logits)} and target shape "
                         f"{_shape(target)} disagree on batch size or H x W")


def check_labels(target, num_classes, ignore_index=None, name="loss"):
    """Check that every target label is a valid class index for ``num_classes`` logits.

    Valid labels are ``0 .. num_classes-1`` for ``num_classes >= 2`` and ``{0, 1}`` for a single
    sigmoid logit (``num_classes == 1``); pixels equal to ``ignore_index`` are skipped. An
    all-ignored target is valid.

    Raises:
        ValueError: the target is not an integer tensor, or a label is out of range (the message
            gives the min and max found and hints at 0/255 masks).
    """
    dtype = str(target.dtype)
    if not (dtype.startswith("int") or dtype.startswith("uint") or dtype == "bool"):
        raise ValueError(f"loss '{name}': target must hold integer class indices, got dtype {dtype}")
    labels = target.int32()
    if ignore_index is None:
        low, high = labels.min(), labels.max()
    else:
        ignored = labels == ignore_index
        low = jt.where(ignored, jt.full_like(labels, np.iinfo(np.int32).max), labels).min()
        high = jt.where(ignored, jt.full_like(labels, np.iinfo(np.int32).min), labels).max()
    low, high = (int(v) for v in jt.stack([low, high]).numpy().reshape(-1))
    upper = max(num_classes, 2)
    if low > high or (low >= 0 and high < upper):
        return
    if num_classes == 1:
        allowed = "must be 0 or 1 for a single-logit (sigmoid) model"
    else:
        allowed = f"must be in [0, {num_classes})"
    if ignore_index is not None:
        allowed += f" or {ignore_index} (ignore_index)"
    hint = " (binary masks must be 0/1 class indices, not 0/255)" if high == 255 and low >= 0 else ""
    raise ValueError(f"loss '{name}': target labels {allowed}, found min {low} max {high}{hint}")


def _check_class_list(values, what, name):
    """A list of non-negative finite floats as a float32 array, or a ValueError naming ``what``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"loss '{name}': {what} must be a list of numbers, got {values!r}")
    if not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"loss '{name}': {what} must be non-negative numbers, got {list(values)}")
    return np.asarray(values, dtype=np.float32)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_non_negative(value, what, name):
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"loss '{name}': {what} must be a non-negative number, got {value!r}")
    return float(value)


def _softplus(x):
    """log(1 + exp(x)) without overflow for large |x|."""
    return jt.maximum(x, 0.0) + jt.log(1.0 + jt.exp(-x.abs()))


def _valid_mask(target, ignore_index):
    """Float N x H x W mask: 1 where the pixel counts, 0 where it equals ``ignore_index``."""
    if ignore_index is None:
        return jt.ones(target.shape, dtype="float32")
    return (target != ignore_index).float32()


def _one_hot(target, num_classes):
    """Float N x C x H x W one-hot of ``target``; labels outside [0, C) give all-zero rows."""
    classes = jt.arange(num_classes).reshape(1, num_classes, 1, 1)
    return (target.int32().unsqueeze(1) == classes).float32()


def _masked_mean(values, valid):
    """Sum of ``values * valid`` over ``sum(valid)``; 0 when nothing is valid."""
    count = valid.sum()
    return (values * valid).sum() / (count + (count == 0).float32())


class SegLoss(nn.Module):
    """Base class: ``execute`` validates the inputs, ``compute`` does the maths without checks.

    Subclasses set ``name`` (the key used by ``build_loss``), implement ``compute`` and, when they
    only suit some class counts, ``check_num_classes``.
    """

    name = "loss"

    def __init__(self, ignore_index=None):
        super().__init__()
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, numbers.Integral)):
            raise ValueError(f"loss '{self.name}': ignore_index must be an integer or None, "
                             f"got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def check_num_classes(self, num_classes):
        """Raise ``ValueError`` when this loss cannot be used with ``num_classes`` logit channels."""

    def execute(self, logits, target):
        """Loss of N x C x H x W ``logits`` against N x H x W ``target``; a scalar Var."""
        check_logits_target(logits, target, self.name)
        self.check_num_classes(logits.shape[1])
        check_labels(target, logits.shape[1], self.ignore_index, self.name)
        return self.compute(logits, target)

    def compute(self, logits, target):
        """The loss value, assuming ``execute``'s checks passed."""
        raise NotImplementedError


class CrossEntropyLoss(SegLoss):
    """Softmax cross-entropy averaged over pixels, for ``C >= 2``.

    With class ``weight`` the mean is weighted like PyTorch's: ``sum(w_t * nll) / sum(w_t)`` over
    the non-ignored pixels, where ``w_t`` is the weight of the pixel's target class.

    Args:
        weight: optional list of ``C`` non-negative class weights.
        ignore_index: target value whose pixels are left out.
    """

    name = "ce"

    def __init__(self, weight=None, ignore_index=None):
        super().__init__(ignore_index)
        self.class_weight = None if weight is None else _check_class_list(weight, "weight", self.name)

    def check_num_classes(self, num_classes):
        if num_classes < 2:
            raise ValueError(f"loss 'ce': needs at least 2 logit channels (softmax), got {num_classes}; "
                             "use 'bce' for a single sigmoid logit")
        if self.class_weight is not None and len(self.class_weight) != num_classes:
            raise ValueError(f"loss 'ce': weight has {len(self.class_weight)} entries but there are "
                             f"{num_classes} classes")

    def compute(self, logits, target):
        num_classes = logits.shape[1]
        valid = _valid_mask(target, self.ignore_index)
        one_hot = _one_hot(target, num_classes) * valid.unsqueeze(1)
        nll = -(nn.log_softmax(logits, dim=1) * one_hot).sum(dim=1)
        if self.class_weight is None:
            return _masked_mean(nll, valid)
        pixel_weight = (one_hot * jt.array(self.class_weight).reshape(1, num_classes, 1, 1)).sum(dim=1)
        return _masked_mean(nll, pixel_weight)


class BCEWithLogitsLoss(SegLoss):
    """Binary cross-entropy on a single foreground logit (``C == 1``), averaged over pixels.

    Uses the overflow-free form ``(1 - y) * x + (1 + (pos_weight - 1) * y) * softplus(-x)``.

    Args:
        pos_weight: optional weight of the foreground (positive) term; > 1 favours recall.
        ignore_index: target value whose pixels are left out.
    """

    name = "bce"

    def __init__(self, pos_weight=None, ignore_index=None):
        super().__init__(ignore_index)
        self.pos_weight = None if pos_weight is None else _check_non_negative(pos_weight, "pos_weight", self.name)

    def check_num_classes(self, num_classes):
        if num_classes != 1:
            raise ValueError(f"loss 'bce': needs exactly 1 logit channel (sigmoid), got {num_classes}; "
                             "use 'ce' for a softmax over 2 or more classes")

    def compute(self, logits, target):
        x = logits[:, 0]
        y = (target == 1).float32()
        pos_factor = 1.0 if self.pos_weight is None else 1.0 + (self.pos_weight - 1.0) * y
        loss = (1.0 - y) * x + pos_factor * _softplus(-x)
        return _masked_mean(loss, _valid_mask(target, self.ignore_index))


class FocalLoss(SegLoss):
    """Focal loss ``-alpha_t * (1 - p_t)^gamma * log(p_t)``, mean over non-ignored pixels.

    ``p_t`` is the probability of the target class (softmax for ``C >= 2``, sigmoid for
    ``C == 1``). With ``gamma=0`` and no ``alpha`` it equals cross-entropy. The mean is a plain
    mean over pixels, not weighted by ``alpha``.

    Args:
        gamma: focusing exponent (>= 0); larger values down-weight well-classified pixels.
        alpha: for ``C >= 2`` a list of ``C`` class weights; for ``C == 1`` a float in [0, 1],
            the weight of foreground pixels (background pixels get ``1 - alpha``).
        ignore_index: target value whose pixels are left out.
    """

    name = "focal"

    def __init__(self, gamma=2.0, alpha=None, ignore_index=None):
        super().__init__(ignore_index)
        self.gamma = _check_non_negative(gamma, "gamma", self.name)
        if alpha is None or _is_number(alpha):
            if alpha is not None and not 0 <= alpha <= 1:
                raise ValueError(f"loss 'focal': a scalar alpha must be in [0, 1], got {alpha!r}")
            self.alpha = alpha
        else:
            self.alpha = _check_class_list(alpha, "alpha", self.name)

    def check_num_classes(self, num_classes):
        if self.alpha is None:
            return
        if num_classes == 1 and not _is_number(self.alpha):
            raise ValueError("loss 'focal': with 1 logit channel alpha must be a float in [0, 1] "
                             f"(foreground weight), got a list of {len(self.alpha)}")
        if num_classes >= 2 and (_is_number(self.alpha) or len(self.alpha) != num_classes):
            found = "a float" if _is_number(self.alpha) else f"{len(self.alpha)} entries"
            raise ValueError(f"loss 'focal': alpha must be a list of {num_classes} class weights, got {found}")

    def compute(self, logits, target):
        num_classes = logits.shape[1]
        valid = _valid_mask(target, self.ignore_index)
        if num_classes == 1:
            x = logits[:, 0]
            y = (target == 1).float32()
            log_pt = -(y * _softplus(-x) + (1.0 - y) * _softplus(x))
            alpha_t = None if self.alpha is None else self.alpha * y + (1.0 - self.alpha) * (1.0 - y)
        else:
            one_hot = _one_hot(target, num_classes)
            log_pt = (nn.log_softmax(logits, dim=1) * one_hot).sum(dim=1)
            alpha_t = None if self.alpha is None else \
                (one_hot * jt.array(self.alpha).reshape(1, num_classes, 1, 1)).sum(dim=1)
        loss = -log_pt
        if self.gamma > 0:
            # The clamp keeps d/dp of (1 - p)^gamma finite at p == 1 when gamma < 1.
            loss = loss * jt.pow(jt.maximum(1.0 - jt.exp(log_pt), 1e-12), self.gamma)
        if alpha_t is not None:
            loss = loss * alpha_t
        return _masked_mean(loss, valid)


class _OverlapLoss(SegLoss):
    """Shared soft true-positive / false-positive / false-negative sums for Dice, IoU and Tversky.

    Sums run over H x W per image and class (and over the batch too when ``batch_dice``); the
    per-class scores are averaged and subtracted from 1. Classes are 1..C-1 unless
    ``include_background``; for ``C == 1`` the single sigmoid channel is the foreground and
    ``include_background`` has no effect. A class absent from both target and prediction scores
    ``smooth / smooth = 1`` (no loss).
    """

    def __init__(self, include_background=False, smooth=1e-5, batch_dice=False, ignore_index=None):
        super().__init__(ignore_index)
        self.include_background = bool(include_background)
        self.smooth = _check_non_negative(smooth, "smooth", self.name)
        self.batch_dice = bool(batch_dice)

    def overlap_sums(self, logits, target):
        """(tp, fp, fn): soft counts of shape K (batch_dice) or N x K over the scored classes."""
        num_classes = logits.shape[1]
        valid = _valid_mask(target, self.ignore_index).unsqueeze(1)
        if num_classes == 1:
            probs = jt.sigmoid(logits)
            truth = (target == 1).float32().unsqueeze(1)
        else:
            probs = nn.softmax(logits, dim=1)
            truth = _one_hot(target, num_classes)
            if not self.include_background:
                probs, truth = probs[:, 1:], truth[:, 1:]
        probs, truth = probs * valid, truth * valid
        dims = [0, 2, 3] if self.batch_dice else [2, 3]
        tp = (probs * truth).sum(dims)
        return tp, probs.sum(dims) - tp, truth.sum(dims) - tp

    def score(self, tp, fp, fn):
        """Per-class similarity in [0, 1] from the soft counts."""
        raise NotImplementedError

    def compute(self, logits, target):
        return 1.0 - self.score(*self.overlap_sums(logits, target)).mean()


class DiceLoss(_OverlapLoss):
    """Soft Dice loss ``1 - mean_k (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)``.

    Args:
        include_background: also score class 0 (``C >= 2`` only).
        smooth: added to numerator and denominator; keeps empty classes finite.
        batch_dice: sum over the whole batch before the ratio instead of per image.
        ignore_index: target value whose pixels are left out.
    """

    name = "dice"

    def score(self, tp, fp, fn):
        return (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth)


class IoULoss(_OverlapLoss):
    """Soft Jaccard loss ``1 - mean_k (sum(p * g) + smooth) / (sum(p) + sum(g) - sum(p * g) + smooth)``.

    Takes the same arguments as ``DiceLoss``.
    """

    name = "iou"

    def score(self, tp, fp, fn):
        return (tp + self.smooth) / (tp + fp + fn + self.smooth)


class TverskyLoss(_OverlapLoss):
    """Tversky loss ``1 - mean_k (TP + smooth) / (TP + alpha * FP + beta * FN + smooth)``.

    ``alpha`` weights false positives (``sum(p * (1 - g))``) and ``beta`` false negatives
    (``sum((1 - p) * g)``); the default beta > alpha favours recall. ``alpha = beta = 0.5`` is Dice.

    Args:
        alpha: weight of false positives (>= 0).
        beta: weight of false negatives (>= 0).
        include_background, smooth, batch_dice, ignore_index: as in ``DiceLoss``.
    """

    name = "tversky"

    def __init__(self, alpha=0.3, beta=0.7, include_background=False, smooth=1e-5, batch_dice=False,
                 ignore_index=None):
        super().__init__(include_background, smooth, batch_dice, ignore_index)
        self.alpha = _check_non_negative(alpha, "alpha", self.name)
        self.beta = _check_non_negative(beta, "beta", self.name)

    def score(self, tp, fp, fn):
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)


LOSSES = {cls.name: cls for cls in (CrossEntropyLoss, BCEWithLogitsLoss, DiceLoss, IoULoss, FocalLoss,
                                    TverskyLoss)}


class WeightedSumLoss(SegLoss):
    """``sum_i weight_i * loss_i`` over named losses, validating the inputs once per call.

    The unweighted value of each term from the last ``execute`` is kept as a Var and only fetched
    when ``last_terms()`` is called, so training steps are not synchronised for logging. Holding it
    keeps the last logits alive until the next call.

    Args:
        losses: mapping name -> ``SegLoss``.
        weights: mapping name -> non-negative float, same names as ``losses``.
    """

    def __init__(self, losses, weights):
        super().__init__()
        if set(losses) != set(weights):
            raise ValueError(f"losses {sorted(losses)} and weights {sorted(weights)} name different terms")
        self.term_names = list(losses)
        self.terms = nn.ModuleList([losses[n] for n in self.term_names])
        self.weights = {n: float(weights[n]) for n in self.term_names}
        self.name = "+".join(self.term_names)
        self._last_terms = None

    def check_num_classes(self, num_classes):
        for term in self.terms:
            term.check_num_classes(num_classes)

    def execute(self, logits, target):
        check_logits_target(logits, target, self.name)
        self.check_num_classes(logits.shape[1])
        for ignore_index in dict.fromkeys(term.ignore_index for term in self.terms):
            check_labels(target, logits.shape[1], ignore_index, self.name)
        values = self._term_values(logits, target)
        self._last_terms = jt.stack([v.detach().reshape(1) for v in values]).reshape(-1)
        return self._weighted_sum(values)

    def compute(self, logits, target):
        return self._weighted_sum(self._term_values(logits, target))

    def _term_values(self, logits, target):
        return [term.compute(logits, target) for term in self.terms]

    def _weighted_sum(self, values):
        total = None
        for name, value in zip(self.term_names, values):
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        return total

    def last_terms(self):
        """``{name: float}`` unweighted term values of the last ``execute`` ({} before the first)."""
        if self._last_terms is None:
            return {}
        return dict(zip(self.term_names, (float(v) for v in self._last_terms.numpy())))


class DeepSupervisionLoss(nn.Module):
    """``loss(main) + sum_i w_i * loss(aux_i)`` for a model returning auxiliary outputs.

    Auxiliary logits whose H x W differ from the target's are resized to it bilinearly
    (``align_corners=False``) before the loss. The labels are validated once per call.

    Args:
        base_loss: a ``SegLoss`` (e.g. from ``build_loss``) applied to every output.
        weights: one non-negative weight per auxiliary output.
    """

    def __init__(self, base_loss, weights):
        super().__init__()
        if not isinstance(base_loss, SegLoss):
            raise ValueError(f"DeepSupervisionLoss: base_loss must be a SegLoss, got {type(base_loss).__name__}")
        self.base_loss = base_loss
        self.aux_weights = [_check_non_negative(w, "deep supervision weight", base_loss.name) for w in weights]

    def execute(self, outputs, target):
        """``outputs``: list [main, aux_1, ...] of N x C x h x w logits; returns a scalar Var."""
        expected = 1 + len(self.aux_weights)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != expected:
            found = f"{len(outputs)} outputs" if isinstance(outputs, (list, tuple)) else type(outputs).__name__
            raise ValueError(f"deep supervision: expected a list of {expected} logits (main + "
                             f"{len(self.aux_weights)} auxiliary), got {found}")
        main = outputs[0]
        total = self.base_loss(main, target)
        height, width = target.shape[1:]
        for index, (aux, weight) in enumerate(zip(outputs[1:], self.aux_weights), start=1):
            if len(aux.shape) != 4 or tuple(aux.shape[:2]) != tuple(main.shape[:2]):
                raise ValueError(f"deep supervision: output {index} has shape {_shape(aux)}, expected "
                                 f"{list(main.shape[:2])} + [h, w] like the main output")
            if tuple(aux.shape[2:]) != (height, width):
                aux = nn.interpolate(aux, size=(height, width), mode="bilinear", align_corners=False)
            total = total + weight * self.base_loss.compute(aux, target)
        return total

    def last_terms(self):
        """The base loss's ``last_terms()`` for the main output ({} when it keeps none)."""
        return self.base_loss.last_terms() if hasattr(self.base_loss, "last_terms") else {}


def _unknown_name(key, name, known):
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
    return ConfigError(f"{key}: unknown loss '{name}'{hint}")


def build_loss(spec, num_classes, ignore_index=None, **loss_args):
    """Build the weighted sum of losses described by a config mapping.

    Args:
        spec: mapping loss name -> weight, e.g. ``{"ce": 0.5, "dice": 0.5}``; names are
            ``ce, bce, dice, iou, focal, tversky``; weights are non-negative, not all zero.
        num_classes: number of logit channels (1 = single sigmoid logit).
        ignore_index: target value left out by every loss (``None``: no pixel is ignored).
        **loss_args: per-loss constructor arguments keyed by loss name, e.g.
            ``ce={"weight": [1, 3]}, focal={"gamma": 2}``.

    Returns:
        WeightedSumLoss.

    Raises:
        ConfigError: unknown names, bad weights or arguments, or a loss that does not suit
            ``num_classes`` (``ce`` needs >= 2, ``bce`` exactly 1).
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"train.loss: expected a non-empty mapping of loss name to weight, e.g. "
                          f"{{'ce': 0.5, 'dice': 0.5}}, got {spec!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
    known = list(LOSSES)
    for name, weight in spec.items():
        if name not in LOSSES:
            raise _unknown_name("train.loss", str(name), known)
        if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"train.loss.{name}: weight must be a non-negative number, got {weight!r}")
    if all(weight == 0 for weight in spec.values()):
        raise ConfigError(f"train.loss: all weights are 0 in {dict(spec)}")
    for name, args in loss_args.items():
        if name not in LOSSES:
            raise _unknown_name("train.loss_args", name, known)
        if name not in spec:
            raise ConfigError(f"train.loss_args.{name}: arguments given for loss '{name}' which is not in "
                              f"train.loss {dict(spec)}")
        if not isinstance(args, Mapping):
            raise ConfigError(f"train.loss_args.{name}: expected a mapping of argument to value, got {args!r}")
    if num_classes == 1 and "ce" in spec:
        raise ConfigError("train.loss: 'ce' needs num_classes >= 2 (softmax); with num_classes 1 "
                          "(one sigmoid logit) use 'bce'")
    if num_classes != 1 and "bce" in spec:
        raise ConfigError(f"train.loss: 'bce' needs num_classes 1 (one sigmoid logit); with "
                          f"num_classes {num_classes} use 'ce'")
    losses = {}
    for name in spec:
        cls = LOSSES[name]
        args = {"ignore_index": ignore_index, **loss_args.get(name, {})}
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unexpected = [a for a in args if a not in accepted]
        if unexpected:
            raise ConfigError(f"train.loss_args.{name}: unknown argument '{unexpected[0]}' "
                              f"(accepted: {', '.join(accepted)})")
        try:
            loss = cls(**args)
            loss.check_num_classes(num_classes)
        except ValueError as err:
            raise ConfigError(f"train.loss_args.{name}: {err}") from None
        losses[name] = loss
    return WeightedSumLoss(losses, {name: spec[name] for name in spec})
