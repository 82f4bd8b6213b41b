"""Segmentation metrics on numpy arrays: overlap, ROC AUC, boundary distances, dataset accumulation.

Conventions (the same as MONAI's):

* Masks are same-shape boolean or 0/1 arrays (2D here; nothing below depends on the number of axes).
  ``fov`` is an optional boolean field-of-view mask: pixels outside it never change any metric.
  For the distance metrics the FOV is applied by clearing both masks outside it.
* Boundary of a mask = the mask XOR its binary erosion by the 4-connected cross
  (``scipy.ndimage.generate_binary_structure(2, 1)``); pixels on the image border count as
  boundary. Distances go from each boundary pixel of one mask to the nearest boundary pixel of the
  other, via ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, in units of
  ``spacing`` (one pixel = 1 when ``spacing`` is None).
* HD = max of the two directed maxima. HD95 = max of the two directed 95th percentiles
  (``np.percentile``, linear interpolation). ASSD = mean of all boundary distances of both
  directions pooled together (not the mean of the two directed means).
* Empty inputs never raise and never warn. Where there is nothing to get wrong the score is
  perfect, otherwise it is the worst value:

  ==========================  =====================================================
  dice, iou                   pred and gt both empty -> 1.0; exactly one empty -> 0.0
  precision                   no predicted positives -> 1.0 if gt is empty else 0.0
  recall (sensitivity)        gt empty -> 1.0 if pred is empty else 0.0
  specificity                 gt has no negatives -> 1.0 if pred has none else 0.0
  accuracy                    no pixel inside the FOV -> 1.0
  hd, hd95, assd              both empty -> 0.0; exactly one empty -> inf
  auc                         gt (inside the FOV) all one class -> nan
  ==========================  =====================================================

* Binary predictions from probabilities use ``prob >= threshold``.

Invalid arguments (shape mismatches, non-binary masks, probabilities outside [0, 1], bad spacing)
raise :class:`jmedseg.errors.DataError`, a ``ValueError``.
"""
import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from jmedseg.errors import DataError

__all__ = [
    "dice", "iou", "precision", "recall", "specificity", "accuracy", "auc",
    "hd", "hd95", "assd", "per_class", "SegmentationEvaluator", "AUC_BINS",
]

AUC_BINS = 2 ** 16
"""Number of equal-width probability bins over [0, 1] used by the evaluator's AUC histograms."""

_COUNT_METRIC_NAMES = ("dice", "iou", "precision", "recall", "specificity", "accuracy")
_DISTANCE_METRIC_NAMES = ("hd", "hd95", "assd")


# ----------------------------------------------------------------------------- input checks
def _check_same_shape(a, b, a_name, b_name):
    if a.shape != b.shape:
        raise DataError(f"{a_name} shape {a.shape} does not match {b_name} shape {b.shape}")


def _as_mask(x, what):
    """Boolean mask from a boolean or 0/1 array; other values (e.g. probabilities) raise."""
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what}: expected a boolean or 0/1 array, got dtype {arr.dtype}")
    if np.any((arr != 0) & (arr != 1)):
        raise DataError(f"{what}: values must be 0/1 or boolean, found values outside {{0, 1}}")
    return arr != 0


def _as_scores(x, what, unit_interval):
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{what}: expected a real-valued array, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what}: contains NaN or infinite values")
    if unit_interval and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise DataError(f"{what}: probabilities must lie in [0, 1], found range "
                        f"[{float(arr.min()):g}, {float(arr.max()):g}]")
    return arr


def _binary_inputs(pred, gt, fov):
    """Validated boolean (pred, gt, fov); fov is None when not given."""
    pred = _as_mask(pred, "pred")
    gt = _as_mask(gt, "gt")
    _check_same_shape(pred, gt, "pred", "gt")
    if fov is not None:
        fov = _as_mask(fov, "fov")
        _check_same_shape(fov, gt, "fov", "gt")
    return pred, gt, fov


def _check_spacing(spacing, ndim):
    if spacing is None:
        return None
    values = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(values) != ndim or not all(np.isfinite(s) and s > 0 for s in values):
        raise DataError(f"spacing {spacing!r}: expected {ndim} positive pixel sizes, one per axis")
    return values


# ----------------------------------------------------------------------------- overlap metrics
def _confusion_counts(pred, gt, fov):
    """(tp, fp, fn, tn) as Python ints, counting only pixels inside ``fov``."""
    if fov is not None:
        pred = pred & fov
        gt = gt & fov
        total = int(np.count_nonzero(fov))
    else:
        total = pred.size
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    return tp, fp, fn, total - tp - fp - fn


def _dice_from_counts(tp, fp, fn, tn):
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 1.0


def _iou_from_counts(tp, fp, fn, tn):
    denominator = tp + fp + fn
    return tp / denominator if denominator else 1.0


def _precision_from_counts(tp, fp, fn, tn):
    if tp + fp:
        return tp / (tp + fp)
    return 1.0 if fn == 0 else 0.0


def _recall_from_counts(tp, fp, fn, tn):
    if tp + fn:
        return tp / (tp + fn)
    return 1.0 if fp == 0 else 0.0


def _specificity_from_counts(tp, fp, fn, tn):
    if tn + fp:
        return tn / (tn + fp)
    return 1.0 if fn == 0 else 0.0


def _accuracy_from_counts(tp, fp, fn, tn):
    total = tp + fp + fn + tn
    return (tp + tn) / total if total else 1.0


_COUNT_METRICS = {
    "dice": _dice_from_counts,
    "iou": _iou_from_counts,
    "precision": _precision_from_counts,
    "recall": _recall_from_counts,
    "specificity": _specificity_from_counts,
    "accuracy": _accuracy_from_counts,
}


def _count_metrics(tp, fp, fn, tn):
    return {name: float(fn_(tp, fp, fn, tn)) for name, fn_ in _COUNT_METRICS.items()}


def dice(pred, gt, fov=None):
    """Dice coefficient 2|P∩G| / (|P| + |G|). Both empty -> 1.0, exactly one empty -> 0.0."""
    return float(_dice_from_counts(*_confusion_counts(*_binary_inputs(pred, gt, fov))))


def iou(pred, gt, fov=None):
    """Intersection over union |P∩G| / |P∪G|. Both empty -> 1.0, exactly one empty -> 0.0."""
    return float(_iou_from_counts(*_confusion_counts(*_binary_inputs(pred, gt, fov))))


def precision(pred, gt, fov=None):
    """TP / (TP + FP). No predicted positives -> 1.0 if gt is empty else 0.0."""
    return float(_precision_from_counts(*_confusion_counts(*_binary_inputs(pred, gt, fov))))


def recall(pred, gt, fov=None):
    """Sensitivity TP / (TP + FN). gt empty -> 1.0 if pred is empty else 0.0."""
    return float(_recall_from_counts(*_confusion_counts(*_binary_inputs(pred, gt, fov))))


def specificity(pred, gt, fov=None):
    """TN / (TN + FP). gt without negatives -> 1.0 if pred has no negatives else 0.0."""
    return float(_specificity_from_counts(*_confusion_counts(*_binary_inputs(pred, gt, fov))))


def accuracy(pred, gt, fov=None):
    """Fraction of pixels (inside ``fov``) classified correctly. No pixels -> 1.0."""
    return float(_accuracy_from_counts(*_confusion_counts(*_binary_inputs(pred, gt, fov))))


# ----------------------------------------------------------------------------- ROC AUC
def auc(prob, gt, fov=None):
    """Exact ROC AUC of a score map against a binary mask (rank statistic; tied scores count half).

    Args:
        prob: real-valued scores (usually foreground probabilities), same shape as ``gt``.
        gt: boolean or 0/1 ground truth.
        fov: optional boolean mask; only pixels inside it count.

    Returns:
        The AUC, or nan when ``gt`` (inside the FOV) has no positives or no negatives.
    """
    prob = _as_scores(prob, "prob", unit_interval=False)
    gt = _as_mask(gt, "gt")
    _check_same_shape(prob, gt, "prob", "gt")
    if fov is not None:
        fov = _as_mask(fov, "fov")
        _check_same_shape(fov, gt, "fov", "gt")
        prob, gt = prob[fov], gt[fov]
    n_pos = int(np.count_nonzero(gt))
    n_neg = gt.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(prob.ravel())
    positive_rank_sum = float(ranks[gt.ravel()].sum())
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _score_histograms(scores, positive):
    """Histograms (positives, negatives) of scores in [0, 1] over ``AUC_BINS`` equal bins."""
    bins = np.minimum((scores * AUC_BINS).astype(np.int64), AUC_BINS - 1)
    pos_hist = np.bincount(bins[positive], minlength=AUC_BINS)
    neg_hist = np.bincount(bins, minlength=AUC_BINS) - pos_hist
    return pos_hist, neg_hist


def _auc_from_histograms(pos_hist, neg_hist):
    """ROC AUC from score histograms; a positive and a negative in the same bin count half."""
    n_pos, n_neg = int(pos_hist.sum()), int(neg_hist.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    negatives_below = np.cumsum(neg_hist) - neg_hist
    wins = np.dot(pos_hist.astype(np.float64), negatives_below + 0.5 * neg_hist)
    return float(wins / (n_pos * n_neg))


# ----------------------------------------------------------------------------- distances
def _boundary(mask):
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure)


def _directed_distances(pred, gt, spacing):
    """Boundary distances (pred -> gt, gt -> pred) of two non-empty masks."""
    # Every boundary pixel lies inside the bounding box of pred | gt, so cropping to it gives the
    # same boundaries and nearest distances while the distance transforms see far fewer pixels.
    union = pred | gt
    crop = []
    for axis in range(union.ndim):
        other_axes = tuple(a for a in range(union.ndim) if a != axis)
        occupied = np.flatnonzero(np.any(union, axis=other_axes))
        crop.append(slice(occupied[0], occupied[-1] + 1))
    crop = tuple(crop)
    pred_boundary = _boundary(pred[crop])
    gt_boundary = _boundary(gt[crop])
    to_gt = ndimage.distance_transform_edt(~gt_boundary, sampling=spacing)[pred_boundary]
    to_pred = ndimage.distance_transform_edt(~pred_boundary, sampling=spacing)[gt_boundary]
    return to_gt, to_pred


def _distance_metrics(pred, gt, spacing):
    """{"hd", "hd95", "assd"} of two boolean masks; empty-mask conventions from the module doc."""
    pred_empty, gt_empty = not pred.any(), not gt.any()
    if pred_empty and gt_empty:
        return dict.fromkeys(_DISTANCE_METRIC_NAMES, 0.0)
    if pred_empty or gt_empty:
        return dict.fromkeys(_DISTANCE_METRIC_NAMES, float("inf"))
    to_gt, to_pred = _directed_distances(pred, gt, spacing)
    return {
        "hd": float(max(to_gt.max(), to_pred.max())),
        "hd95": float(max(np.percentile(to_gt, 95), np.percentile(to_pred, 95))),
        "assd": float((to_gt.sum() + to_pred.sum()) / (to_gt.size + to_pred.size)),
    }


def _distance_inputs(pred, gt, spacing, fov):
    pred, gt, fov = _binary_inputs(pred, gt, fov)
    if fov is not None:
        pred, gt = pred & fov, gt & fov
    return pred, gt, _check_spacing(spacing, gt.ndim)


def hd(pred, gt, spacing=None, fov=None):
    """Hausdorff distance between the mask boundaries. Both empty -> 0.0, exactly one -> inf.

    Args:
        pred, gt: boolean or 0/1 masks of the same shape.
        spacing: pixel size per axis, e.g. ``(0.5, 0.8)``; None means 1 per axis.
        fov: optional boolean mask; both masks are cleared outside it first.
    """
    return _distance_metrics(*_distance_inputs(pred, gt, spacing, fov))["hd"]


def hd95(pred, gt, spacing=None, fov=None):
    """Max of the two directed 95th percentiles (linear interpolation) of boundary distances.

    Both empty -> 0.0, exactly one empty -> inf. Arguments as in :func:`hd`.
    """
    return _distance_metrics(*_distance_inputs(pred, gt, spacing, fov))["hd95"]


def assd(pred, gt, spacing=None, fov=None):
    """Average symmetric surface distance: mean of both directions' boundary distances pooled.

    Both empty -> 0.0, exactly one empty -> inf. Arguments as in :func:`hd`.
    """
    return _distance_metrics(*_distance_inputs(pred, gt, spacing, fov))["assd"]


# ----------------------------------------------------------------------------- multi-class
def _as_labels(x, what, num_classes):
    arr = np.asarray(x)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what}: expected integer class labels, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        present = sorted(int(v) for v in np.unique(arr))
        raise DataError(f"{what}: label values {present} are outside 0..{num_classes - 1}")
    return arr


def _check_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 2:
        raise DataError(f"num_classes={num_classes!r}: expected an integer >= 2 "
                        "(2 = binary: background + foreground)")
    return int(num_classes)


def per_class(metric_fn, pred_labels, gt_labels, num_classes, fov=None, include_background=False):
    """Apply a binary metric to each class one-vs-rest.

    Args:
        metric_fn: called as ``metric_fn(pred_labels == c, gt_labels == c, fov=fov)``; any metric
            of this module, or e.g. ``functools.partial(hd95, spacing=(0.5, 0.5))``.
        pred_labels, gt_labels: integer label maps of the same shape, values in 0..num_classes-1.
        num_classes: number of classes including background (class 0).
        fov: optional boolean field-of-view mask passed on to ``metric_fn``.
        include_background: also report class 0 in the returned dict.

    Returns:
        ``(values, foreground_mean)``: dict class -> value, and the plain mean over the foreground
        classes 1..num_classes-1 only (background never enters it; an inf or nan class value
        propagates into the mean).
    """
    num_classes = _check_num_classes(num_classes)
    pred_labels = _as_labels(pred_labels, "pred_labels", num_classes)
    gt_labels = _as_labels(gt_labels, "gt_labels", num_classes)
    _check_same_shape(pred_labels, gt_labels, "pred_labels", "gt_labels")
    first = 0 if include_background else 1
    values = {c: float(metric_fn(pred_labels == c, gt_labels == c, fov=fov))
              for c in range(first, num_classes)}
    foreground_mean = float(np.mean([values[c] for c in range(1, num_classes)]))
    return values, foreground_mean


# ----------------------------------------------------------------------------- evaluator
class SegmentationEvaluator:
    """Accumulates metrics over a dataset, image by image, with bounded memory.

    Binary (``num_classes=2``): ``add`` takes the foreground probability map HxW in [0, 1]
    (also 1xHxW, or 2xHxW whose channel 1 is the foreground), predicting ``prob >= threshold``.
    Multi-class: ``add`` takes class probabilities CxHxW in [0, 1] (prediction = argmax over C).
    Either also accepts an integer label map HxW; its AUC is then that of the hard prediction.

    Every metric is computed per foreground class one-vs-rest; a multi-class value is the plain
    mean over the foreground classes (background is never averaged in). AUC uses histograms of
    the class probability with ``AUC_BINS`` bins over [0, 1] (same-bin pairs count half), so memory
    does not grow with the dataset; it agrees with the exact AUC to about 1e-5. Distance metrics
    (``compute_distances=True``) use masks cleared outside the FOV, in units of ``spacing``.

    Args:
        num_classes: classes including background; 2 = binary.
        threshold: foreground threshold for binary probabilities (``prob >= threshold``).
        compute_distances: also compute hd, hd95 and assd per image.
        spacing: pixel size per axis for the distance metrics; None means 1 per axis.
    """

    def __init__(self, num_classes=2, threshold=0.5, compute_distances=True, spacing=None):
        self.num_classes = _check_num_classes(num_classes)
        if not 0.0 <= float(threshold) <= 1.0:
            raise DataError(f"threshold={threshold!r}: expected a probability in [0, 1]")
        self.threshold = float(threshold)
        self.compute_distances = bool(compute_distances)
        self.spacing = _check_spacing(spacing, 2)
        num_foreground = self.num_classes - 1
        self._confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._pos_hist = np.zeros((num_foreground, AUC_BINS), dtype=np.int64)
        self._neg_hist = np.zeros((num_foreground, AUC_BINS), dtype=np.int64)
        self._per_image = []

    @property
    def metric_names(self):
        """Names of the metrics reported per image, in order."""
        names = _COUNT_METRIC_NAMES + ("auc",)
        return names + _DISTANCE_METRIC_NAMES if self.compute_distances else names

    def _scores_and_labels(self, prob_or_labels, what):
        """(foreground scores (C-1)xHxW in [0, 1], predicted labels HxW) from ``add``'s input."""
        arr = np.asarray(prob_or_labels)
        if self.num_classes == 2:
            if arr.ndim == 3 and arr.shape[0] in (1, 2):
                arr = arr[-1]
            if arr.ndim != 2:
                raise DataError(f"{what}: expected a foreground probability map HxW (or 1xHxW, "
                                f"2xHxW), got shape {arr.shape}")
            prob = _as_scores(arr, what, unit_interval=True)
            return prob[None], (prob >= self.threshold).astype(np.int64)
        if arr.ndim == 3:
            if arr.shape[0] != self.num_classes:
                raise DataError(f"{what}: expected {self.num_classes} class probability maps "
                                f"CxHxW, got shape {arr.shape}")
            prob = _as_scores(arr, what, unit_interval=True)
            return prob[1:], np.argmax(prob, axis=0)
        if arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer):
            labels = _as_labels(arr, what, self.num_classes)
            classes = np.arange(1, self.num_classes).reshape(-1, 1, 1)
            return (labels[None] == classes).astype(np.float32), labels
        raise DataError(f"{what}: expected class probabilities CxHxW or integer labels HxW, "
                        f"got shape {arr.shape} of dtype {arr.dtype}")

    def add(self, prob_or_labels, gt, fov=None, name=None):
        """Add one image and return its per-image metrics.

        Args:
            prob_or_labels: probabilities or labels as described in the class docstring.
            gt: ground-truth labels HxW (binary: boolean or 0/1).
            fov: optional boolean HxW mask; pixels outside it are ignored everywhere.
            name: identifier stored in the per-image record (default: the image's index).

        Returns:
            The per-image record: ``name``, every metric, and for multi-class ``per_class``
            (class -> metrics).
        """
        name = str(len(self._per_image)) if name is None else name
        scores, pred = self._scores_and_labels(prob_or_labels, f"{name}: prediction")
        gt = _as_labels(gt, f"{name}: gt", self.num_classes)
        _check_same_shape(pred, gt, f"{name}: prediction", "gt")
        if fov is not None:
            fov = _as_mask(fov, f"{name}: fov")
            _check_same_shape(fov, gt, f"{name}: fov", "gt")
        select = (lambda a: a[fov]) if fov is not None else np.ravel

        gt_in, pred_in = select(gt).astype(np.int64), select(pred)
        confusion = np.bincount(gt_in * self.num_classes + pred_in,
                                minlength=self.num_classes ** 2)
        confusion = confusion.reshape(self.num_classes, self.num_classes)
        self._confusion += confusion

        class_values = {}
        for index, c in enumerate(range(1, self.num_classes)):
            values = _count_metrics(*_one_vs_rest_counts(confusion, c))
            pos_hist, neg_hist = _score_histograms(select(scores[index]), gt_in == c)
            self._pos_hist[index] += pos_hist
            self._neg_hist[index] += neg_hist
            values["auc"] = _auc_from_histograms(pos_hist, neg_hist)
            if self.compute_distances:
                pred_c, gt_c = pred == c, gt == c
                if fov is not None:
                    pred_c, gt_c = pred_c & fov, gt_c & fov
                values.update(_distance_metrics(pred_c, gt_c, self.spacing))
            class_values[c] = values

        record = {"name": name}
        record.update(_foreground_mean(class_values, self.metric_names))
        if self.num_classes > 2:
            record["per_class"] = class_values
        self._per_image.append(record)
        return record

    def summary(self):
        """Dataset metrics.

        Returns:
            dict with
            ``num_images``;
            ``pooled``: dice, iou, precision, recall, specificity, accuracy from the confusion
            counts summed over all FOV pixels of all images, and auc over all those pixels
            (multi-class: each is the mean over foreground classes of the class's pooled value);
            ``mean``: per-image mean of every metric over images where it is finite;
            ``mean_skipped``: per metric, how many images were left out of ``mean`` as inf/nan
            (e.g. hd when exactly one of pred/gt is empty, auc when gt is one class);
            ``per_image``: the records returned by :meth:`add`;
            multi-class only, ``per_class``: class -> pooled metrics of that foreground class.
        """
        if not self._per_image:
            raise DataError("SegmentationEvaluator.summary(): no images were added")
        pooled_per_class = {}
        for index, c in enumerate(range(1, self.num_classes)):
            values = _count_metrics(*_one_vs_rest_counts(self._confusion, c))
            values["auc"] = _auc_from_histograms(self._pos_hist[index], self._neg_hist[index])
            pooled_per_class[c] = values
        pooled_names = _COUNT_METRIC_NAMES + ("auc",)

        mean, skipped = {}, {}
        for metric in self.metric_names:
            values = np.array([record[metric] for record in self._per_image], dtype=np.float64)
            finite = values[np.isfinite(values)]
            mean[metric] = float(finite.mean()) if finite.size else float("nan")
            skipped[metric] = int(values.size - finite.size)

        result = {
            "num_images": len(self._per_image),
            "pooled": _foreground_mean(pooled_per_class, pooled_names),
            "mean": mean,
            "mean_skipped": skipped,
            "per_image": list(self._per_image),
        }
        if self.num_classes > 2:
            result["per_class"] = pooled_per_class
        return result


def _one_vs_rest_counts(confusion, c):
    """(tp, fp, fn, tn) of class ``c`` from a confusion matrix indexed [gt, pred]."""
    tp = int(confusion[c, c])
    fp = int(confusion[:, c].sum()) - tp
    fn = int(confusion[c, :].sum()) - tp
    return tp, fp, fn, int(confusion.sum()) - tp - fp - fn


def _foreground_mean(class_values, metric_names):
    """Plain mean over foreground classes per metric (inf/nan propagate, no warnings)."""
    return {m: float(np.mean([values[m] for values in class_values.values()]))
            for m in metric_names}
