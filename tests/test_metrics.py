"""Tests for jmedseg.metrics: hand-checkable values, empty-input conventions, FOV, evaluator."""
import functools
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jmedseg.metrics import (SegmentationEvaluator, accuracy, assd, auc, dice, hd, hd95, iou,
                             per_class, precision, recall, specificity)

OVERLAP_METRICS = (dice, iou, precision, recall, specificity, accuracy)
DISTANCE_METRICS = (hd, hd95, assd)


def squares():
    pred = np.zeros((64, 64), dtype=bool)
    gt = np.zeros((64, 64), dtype=bool)
    pred[12:32, 14:34] = True
    gt[10:30, 10:30] = True
    return pred, gt


def disk(radius, size=64, center=32):
    y, x = np.mgrid[:size, :size]
    return (y - center) ** 2 + (x - center) ** 2 <= radius ** 2


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------- hand-checked values
def test_squares_overlap_and_hausdorff():
    pred, gt = squares()
    # 20x20 squares overlapping on rows 12..29 x cols 14..29 = 18 * 16 = 288 pixels.
    assert dice(pred, gt) == pytest.approx(2 * 288 / 800)
    assert round(dice(pred, gt), 4) == 0.72
    assert iou(pred, gt) == pytest.approx(288 / 512)
    assert precision(pred, gt) == pytest.approx(288 / 400)
    assert recall(pred, gt) == pytest.approx(288 / 400)
    assert specificity(pred, gt) == pytest.approx((4096 - 512) / (4096 - 400))
    assert accuracy(pred, gt) == pytest.approx((4096 - 224) / 4096)
    # Corner (31, 33) of pred to the nearest gt boundary pixel (29, 29): sqrt(2^2 + 4^2).
    assert hd(pred, gt) == pytest.approx(math.sqrt(20))
    assert round(hd(pred, gt), 4) == 4.4721


def test_disks_dice_and_hausdorff():
    pred, gt = disk(5), disk(10)
    assert dice(pred, gt) == pytest.approx(0.4070, abs=5e-5)
    assert hd(pred, gt) == pytest.approx(5.0990, abs=5e-5)
    assert hd95(pred, gt) <= hd(pred, gt)
    assert assd(pred, gt) <= hd(pred, gt)


def test_line_to_point_hd95_is_directed_percentile_and_assd_is_pooled():
    # A 1-pixel line is all boundary: distances from it to the single gt pixel are 0, 1, ..., 20.
    pred = np.zeros((32, 40), dtype=bool)
    gt = np.zeros((32, 40), dtype=bool)
    pred[10, 10:31] = True
    gt[10, 10] = True
    assert hd(pred, gt) == pytest.approx(20.0)
    assert hd95(pred, gt) == pytest.approx(0.95 * 20)  # linear interpolation between 19 and 20
    # Pooled: (0 + 1 + ... + 20 + 0) / 22, not the mean of the directed means (10 + 0) / 2.
    assert assd(pred, gt) == pytest.approx(210 / 22)


def test_boundary_is_erosion_by_4_connected_cross():
    # Diamond |dy| + |dx| <= 2: the cross erosion keeps the 5 inner pixels, so the boundary is
    # the 8-pixel ring at |dy| + |dx| == 2: four at distance 2 and four at sqrt(2) from the centre.
    # (A 3x3-square erosion would also put the four pixels at distance 1 on the boundary.)
    y, x = np.mgrid[:9, :9]
    pred = np.abs(y - 4) + np.abs(x - 4) <= 2
    gt = np.zeros((9, 9), dtype=bool)
    gt[4, 4] = True
    assert hd(pred, gt) == pytest.approx(2.0)
    assert assd(pred, gt) == pytest.approx((4 * 2 + 4 * math.sqrt(2) + math.sqrt(2)) / 9)


def test_symmetry():
    pred, gt = squares()
    for metric in (dice, iou, accuracy, hd, hd95, assd):
        assert metric(pred, gt) == pytest.approx(metric(gt, pred))
    assert precision(pred, disk(10)) == pytest.approx(recall(disk(10), pred))


def test_hd95_never_exceeds_hd_on_random_blobs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = rng.random((32, 32)) > 0.7
        gt = rng.random((32, 32)) > 0.6
        assert 0 < hd95(pred, gt) <= hd(pred, gt)


# ----------------------------------------------------------------------------- spacing
def test_spacing_scales_distances():
    pred, gt = squares()
    for metric in DISTANCE_METRICS:
        assert metric(pred, gt, spacing=(2.0, 2.0)) == pytest.approx(2 * metric(pred, gt))


def test_anisotropic_spacing_single_pixels():
    pred = np.zeros((16, 16), dtype=bool)
    gt = np.zeros((16, 16), dtype=bool)
    pred[5, 5] = True
    gt[8, 9] = True
    expected = math.sqrt((3 * 2.0) ** 2 + (4 * 1.0) ** 2)
    for metric in DISTANCE_METRICS:
        assert metric(pred, gt, spacing=(2.0, 1.0)) == pytest.approx(expected)
    assert hd(pred, gt) == pytest.approx(5.0)


def test_bad_spacing_raises():
    pred, gt = squares()
    with pytest.raises(ValueError, match="spacing"):
        hd(pred, gt, spacing=(1.0,))
    with pytest.raises(ValueError, match="spacing"):
        hd(pred, gt, spacing=(1.0, 0.0))


# ----------------------------------------------------------------------------- empty inputs
def test_empty_overlap_conventions(no_warnings):
    empty = np.zeros((8, 8), dtype=bool)
    full = np.zeros((8, 8), dtype=bool)
    full[2:4, 2:4] = True
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    assert iou(full, empty) == 0.0 and iou(empty, full) == 0.0
    assert precision(empty, empty) == 1.0  # nothing predicted, nothing to find
    assert precision(empty, full) == 0.0  # nothing predicted, something missed
    assert recall(empty, empty) == 1.0
    assert recall(full, empty) == 0.0  # gt empty, false positives predicted
    everything = np.ones((8, 8), dtype=bool)
    assert specificity(everything, everything) == 1.0
    assert specificity(full, everything) == 0.0
    fov_none = np.zeros((8, 8), dtype=bool)
    assert accuracy(full, empty, fov=fov_none) == 1.0


def test_empty_distance_conventions(no_warnings):
    empty = np.zeros((8, 8), dtype=bool)
    full = np.zeros((8, 8), dtype=bool)
    full[2:4, 2:4] = True
    for metric in DISTANCE_METRICS:
        assert metric(empty, empty) == 0.0
        assert metric(full, empty) == math.inf
        assert metric(empty, full) == math.inf


def test_auc_single_class_gt_is_nan(no_warnings):
    prob = np.linspace(0, 1, 16).reshape(4, 4)
    assert math.isnan(auc(prob, np.zeros((4, 4), dtype=bool)))
    assert math.isnan(auc(prob, np.ones((4, 4), dtype=bool)))


def test_mask_touching_image_border():
    pred = np.ones((6, 6), dtype=bool)
    gt = np.ones((6, 6), dtype=bool)
    gt[:, 5] = False
    # Image-border pixels are boundary: pred's column 5 is 1 away from gt's column 4.
    assert hd(pred, gt) == pytest.approx(1.0)
    assert hd(pred, pred) == 0.0


# ----------------------------------------------------------------------------- FOV and AUC
def test_fov_hand_checked():
    pred = np.ones((4, 4), dtype=bool)
    gt = np.zeros((4, 4), dtype=bool)
    gt[:, :2] = True
    fov = np.zeros((4, 4), dtype=bool)
    fov[:, :2] = True
    assert precision(pred, gt) == pytest.approx(0.5)
    assert precision(pred, gt, fov=fov) == 1.0
    assert accuracy(pred, gt, fov=fov) == 1.0
    assert specificity(pred, gt, fov=fov) == 1.0  # no gt negatives inside the FOV


def test_pixels_outside_fov_never_change_a_metric():
    rng = np.random.default_rng(1)
    pred = np.zeros((40, 40), dtype=bool)
    gt = np.zeros((40, 40), dtype=bool)
    pred[10:25, 12:28] = True
    gt[14:30, 10:26] = True
    prob = np.clip(0.6 * gt + 0.5 * rng.random((40, 40)), 0, 1)
    fov = disk(15, size=40, center=20)
    outside = ~fov
    pred2, gt2, prob2 = pred.copy(), gt.copy(), prob.copy()
    pred2[outside] = rng.random(np.count_nonzero(outside)) > 0.5
    gt2[outside] = rng.random(np.count_nonzero(outside)) > 0.5
    prob2[outside] = rng.random(np.count_nonzero(outside))
    for metric in OVERLAP_METRICS + DISTANCE_METRICS:
        assert metric(pred, gt, fov=fov) == pytest.approx(metric(pred2, gt2, fov=fov))
    assert auc(prob, gt, fov=fov) == pytest.approx(auc(prob2, gt2, fov=fov))
    assert dice(pred, gt, fov=fov) != pytest.approx(dice(pred2, gt2))


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(2)
    gt = rng.random((30, 30)) > 0.6
    prob = np.round(np.clip(0.3 * gt + 0.7 * rng.random((30, 30)), 0, 1), 1)  # many ties
    assert auc(prob, gt) == pytest.approx(roc_auc_score(gt.ravel(), prob.ravel()), abs=1e-12)
    fov = rng.random((30, 30)) > 0.3
    assert auc(prob, gt, fov=fov) == pytest.approx(roc_auc_score(gt[fov], prob[fov]), abs=1e-12)


# ----------------------------------------------------------------------------- input errors
def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(5, 4\)"):
        hd(np.zeros((4, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        SegmentationEvaluator().add(np.zeros((3, 3)), np.zeros((4, 4), dtype=np.uint8))


def test_probability_map_is_not_a_mask():
    with pytest.raises(ValueError, match="0/1"):
        dice(np.full((4, 4), 0.3), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SegmentationEvaluator().add(np.full((4, 4), 1.5), np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="outside 0..1"):
        SegmentationEvaluator().add(np.zeros((4, 4)), np.full((4, 4), 255, dtype=np.uint8))


# ----------------------------------------------------------------------------- multi-class
def three_class_example():
    """gt: class 1 top-left 2x2, class 2 bottom-right 2x2; pred finds all of 1, half of 2."""
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[0:2, 0:2] = 1
    gt[2:4, 2:4] = 2
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[0:2, 0:2] = 1
    pred[2:4, 2:3] = 2
    return pred, gt


def test_per_class_mean_excludes_background():
    pred, gt = three_class_example()
    values, mean = per_class(dice, pred, gt, num_classes=3)
    assert values == {1: pytest.approx(1.0), 2: pytest.approx(2 * 2 / (2 + 4))}
    assert mean == pytest.approx((1 + 2 / 3) / 2)
    values, mean_with_bg = per_class(dice, pred, gt, num_classes=3, include_background=True)
    assert values[0] == pytest.approx(2 * 8 / (8 + 10))  # background: 8 gt, 10 predicted
    assert mean_with_bg == pytest.approx(mean)
    _, hd_mean = per_class(functools.partial(hd, spacing=(2.0, 2.0)), pred, gt, num_classes=3)
    assert hd_mean == pytest.approx((0.0 + 2.0) / 2)


def test_per_class_rejects_out_of_range_labels():
    pred, gt = three_class_example()
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        per_class(dice, pred + 1, gt, num_classes=3)


def test_multiclass_evaluator_pooled_per_class():
    pred, gt = three_class_example()
    prob = np.full((3, 4, 4), 0.1)
    for c in range(3):
        prob[c][pred == c] = 0.8
    evaluator = SegmentationEvaluator(num_classes=3)
    record = evaluator.add(prob, gt, name="case")
    summary = evaluator.summary()
    per_cls = summary["per_class"]
    assert set(per_cls) == {1, 2}
    assert per_cls[1]["dice"] == pytest.approx(1.0)
    assert per_cls[2]["dice"] == pytest.approx(2 / 3)
    assert per_cls[2]["iou"] == pytest.approx(0.5)
    assert summary["pooled"]["dice"] == pytest.approx(5 / 6)  # background's 8/9 not averaged in
    assert summary["pooled"]["iou"] == pytest.approx(0.75)
    # Class 2: positives {0.8, 0.8, 0.1, 0.1}, 12 negatives at 0.1 -> (24 + 0.5 * 24) / 48.
    assert per_cls[1]["auc"] == pytest.approx(1.0)
    assert per_cls[2]["auc"] == pytest.approx(0.75)
    assert summary["pooled"]["auc"] == pytest.approx(0.875)
    # Class 2 distances: gt column 3 is 1 from pred column 2 -> hd 1, assd (0+0+0+1+0+1)/6.
    assert record["per_class"][2]["hd"] == pytest.approx(1.0)
    assert record["per_class"][2]["assd"] == pytest.approx(2 / 6)
    assert record["hd"] == pytest.approx(0.5)
    assert summary["per_image"][0]["name"] == "case"
    # Integer labels give the same overlap metrics.
    labels_eval = SegmentationEvaluator(num_classes=3, compute_distances=False)
    labels_eval.add(pred, gt)
    assert labels_eval.summary()["pooled"]["dice"] == pytest.approx(5 / 6)
    assert "hd" not in labels_eval.summary()["mean"]


# ----------------------------------------------------------------------------- binary evaluator
def two_binary_images():
    """Image 1: 2x2 squares shifted by one column (tp 2, fp 2, fn 2); image 2: exact match."""
    gt1 = np.zeros((6, 6), dtype=np.uint8)
    gt1[1:3, 1:3] = 1
    prob1 = np.full((6, 6), 0.1)
    prob1[1:3, 2:4] = 0.9
    prob1[1, 2] = 0.5  # exactly at the threshold: predicted foreground
    prob1[0, 0] = 0.49  # just below: background
    gt2 = np.zeros((6, 6), dtype=np.uint8)
    gt2[2:4, 0:4] = 1
    prob2 = np.where(gt2 == 1, 0.7, 0.2)
    return (prob1, gt1), (prob2, gt2)


def test_binary_evaluator_pooled_vs_per_image():
    images = two_binary_images()
    evaluator = SegmentationEvaluator()
    for index, (prob, gt) in enumerate(images):
        evaluator.add(prob, gt, name=f"img{index}")
    summary = evaluator.summary()
    assert summary["num_images"] == 2
    assert "per_class" not in summary

    # Pooled counts over 72 pixels: tp 2 + 8, fp 2, fn 2, tn 58.
    pooled = summary["pooled"]
    assert pooled["dice"] == pytest.approx(20 / 24)
    assert pooled["iou"] == pytest.approx(10 / 14)
    assert pooled["precision"] == pytest.approx(10 / 12)
    assert pooled["recall"] == pytest.approx(10 / 12)
    assert pooled["specificity"] == pytest.approx(58 / 60)
    assert pooled["accuracy"] == pytest.approx(68 / 72)
    probs = np.concatenate([prob.ravel() for prob, _ in images])
    gts = np.concatenate([gt.ravel() for _, gt in images])
    assert pooled["auc"] == pytest.approx(roc_auc_score(gts, probs), abs=1e-6)

    # Per image: image 1 dice 0.5, iou 1/3, specificity 30/32, accuracy 32/36; image 2 perfect.
    first, second = summary["per_image"]
    assert (first["name"], second["name"]) == ("img0", "img1")
    assert first["dice"] == pytest.approx(0.5)
    # Image 1 AUC: positives 0.1, 0.1, 0.5, 0.9 vs 29 negatives at 0.1, one at 0.49, two at 0.9.
    assert first["auc"] == pytest.approx((14.5 + 14.5 + 30 + 31) / 128)
    assert first["hd"] == pytest.approx(1.0)
    assert first["hd95"] == pytest.approx(1.0)
    assert first["assd"] == pytest.approx(4 / 8)
    assert second["dice"] == 1.0 and second["hd"] == 0.0 and second["auc"] == 1.0
    mean = summary["mean"]
    assert mean["dice"] == pytest.approx(0.75)
    assert mean["iou"] == pytest.approx((1 / 3 + 1) / 2)
    assert mean["specificity"] == pytest.approx((30 / 32 + 1) / 2)
    assert mean["accuracy"] == pytest.approx((32 / 36 + 1) / 2)
    assert mean["hd"] == pytest.approx(0.5)
    assert mean["assd"] == pytest.approx(0.25)
    assert all(count == 0 for count in summary["mean_skipped"].values())


def test_evaluator_skips_non_finite_distances_in_mean(no_warnings):
    gt = np.zeros((8, 8), dtype=np.uint8)
    gt[2:5, 2:5] = 1
    evaluator = SegmentationEvaluator()
    evaluator.add(gt.astype(float), gt)
    evaluator.add(np.zeros((8, 8)), gt)  # nothing predicted: hd = inf
    evaluator.add(np.zeros((8, 8)), np.zeros((8, 8), dtype=np.uint8))  # both empty, gt one class
    summary = evaluator.summary()
    assert [record["hd"] for record in summary["per_image"]] == [0.0, math.inf, 0.0]
    assert summary["mean"]["hd"] == 0.0
    assert summary["mean_skipped"]["hd"] == 1
    assert math.isnan(summary["per_image"][2]["auc"])
    assert summary["mean_skipped"]["auc"] == 1
    assert summary["mean"]["auc"] == pytest.approx((1.0 + 0.5) / 2)
    assert summary["mean"]["dice"] == pytest.approx((1 + 0 + 1) / 3)


def test_evaluator_fov_and_spacing():
    (prob1, gt1), _ = two_binary_images()
    fov = np.zeros((6, 6), dtype=bool)
    fov[:, :5] = True
    changed_prob, changed_gt = prob1.copy(), gt1.copy()
    changed_prob[:, 5] = 0.95
    changed_gt[:, 5] = 1
    a = SegmentationEvaluator(spacing=(3.0, 3.0))
    b = SegmentationEvaluator(spacing=(3.0, 3.0))
    a.add(prob1, gt1, fov=fov)
    b.add(changed_prob, changed_gt, fov=fov)
    assert a.summary()["pooled"] == b.summary()["pooled"]
    assert a.summary()["per_image"] == b.summary()["per_image"]
    assert a.summary()["per_image"][0]["hd"] == pytest.approx(3.0)


def test_evaluator_accepts_channel_first_binary_probabilities():
    (prob1, gt1), _ = two_binary_images()
    single, two_channel = SegmentationEvaluator(), SegmentationEvaluator()
    single.add(prob1, gt1)
    two_channel.add(np.stack([1 - prob1, prob1]), gt1)
    assert two_channel.summary()["pooled"] == single.summary()["pooled"]


def test_histogram_auc_agrees_with_exact_auc():
    rng = np.random.default_rng(3)
    evaluator = SegmentationEvaluator(compute_distances=False)
    probs, gts = [], []
    for _ in range(3):
        gt = (rng.random((60, 70)) > 0.7).astype(np.uint8)
        prob = np.clip(0.35 * gt + 0.65 * rng.random((60, 70)), 0, 1).astype(np.float32)
        evaluator.add(prob, gt)
        probs.append(prob.ravel())
        gts.append(gt.ravel())
    exact = roc_auc_score(np.concatenate(gts), np.concatenate(probs))
    assert 0.6 < exact < 0.99
    assert evaluator.summary()["pooled"]["auc"] == pytest.approx(exact, abs=1e-4)
    per_image_exact = roc_auc_score(gts[0], probs[0])
    assert evaluator.summary()["per_image"][0]["auc"] == pytest.approx(per_image_exact, abs=1e-4)


def test_summary_without_images_raises():
    with pytest.raises(ValueError, match="no images"):
        SegmentationEvaluator().summary()
