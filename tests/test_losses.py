"""Segmentation losses against hand-computed values and numpy references."""
import math

import numpy as np
import pytest

from model_zoo.backend import jt
from jmedseg.errors import ConfigError
from jmedseg.losses import (BCEWithLogitsLoss, CrossEntropyLoss, DeepSupervisionLoss, DiceLoss, FocalLoss,
                            IoULoss, TverskyLoss, WeightedSumLoss, build_loss, check_labels)

LN3 = math.log(3.0)

# One 2x2 image whose foreground probabilities are 0.75, 0.25 / 0.5, 0.5 against target 1, 1 / 1, 0:
# TP = 1.5, FP = sum(p) - TP = 0.5, FN = sum(g) - TP = 1.5.
FG_LOGIT = np.array([[LN3, -LN3], [0.0, 0.0]], dtype=np.float32)
HAND_TARGET = np.array([[[1, 1], [1, 0]]], dtype=np.int32)


def two_class_logits(fg_logit):
    """Softmax logits (background 0, foreground ``fg_logit``): p(fg) = sigmoid(fg_logit)."""
    fg = np.asarray(fg_logit, dtype=np.float32).reshape(-1, 1, *np.shape(fg_logit)[-2:])
    return jt.array(np.concatenate([np.zeros_like(fg), fg], axis=1))


def one_logit(fg_logit):
    return jt.array(np.asarray(fg_logit, dtype=np.float32).reshape(-1, 1, *np.shape(fg_logit)[-2:]))


def value(var):
    return float(var.numpy().reshape(-1)[0])


def numpy_log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def random_case(num_classes=3, seed=0, shape=(2, 8, 8)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(shape[0], num_classes, *shape[1:])).astype(np.float32)
    target = rng.integers(0, num_classes, size=shape).astype(np.int32)
    return logits, target


# ---- cross-entropy -------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 4])
def test_ce_of_uniform_logits_is_log_num_classes(num_classes):
    target = jt.array(np.arange(2 * 8 * 8).reshape(2, 8, 8) % num_classes)
    loss = CrossEntropyLoss()(jt.zeros((2, num_classes, 8, 8)), target)
    assert value(loss) == pytest.approx(math.log(num_classes), abs=1e-5)  # float32 sums


def test_ce_hand_example():
    # Pixels with p(target) = 0.75, 0.75, 0.5, 0.5 -> mean of -log p.
    loss = CrossEntropyLoss()(two_class_logits(FG_LOGIT[None]), jt.array(np.array([[[1, 0], [1, 0]]])))
    assert value(loss) == pytest.approx((2 * -math.log(0.75) + 2 * math.log(2)) / 4, abs=1e-6)


def test_ce_class_weights_and_ignore_index_match_numpy_reference():
    logits, target = random_case(num_classes=3)
    target[0, :3, :3] = 255
    weight = np.array([0.2, 1.0, 3.0])
    valid = target != 255
    safe_target = np.where(valid, target, 0)
    nll = -np.take_along_axis(numpy_log_softmax(logits.astype(np.float64)), safe_target[:, None], axis=1)[:, 0]
    pixel_weight = weight[safe_target] * valid
    expected = (pixel_weight * nll).sum() / pixel_weight.sum()

    loss = CrossEntropyLoss(weight=list(weight), ignore_index=255)(jt.array(logits), jt.array(target))
    assert value(loss) == pytest.approx(expected, rel=1e-5)
    unweighted = CrossEntropyLoss(ignore_index=255)(jt.array(logits), jt.array(target))
    assert value(unweighted) == pytest.approx(nll[valid].mean(), rel=1e-5)


def test_ce_ignore_index_inside_class_range_and_all_ignored():
    logits, target = random_case(num_classes=3, seed=1)
    nll = -np.take_along_axis(numpy_log_softmax(logits.astype(np.float64)), target[:, None], axis=1)[:, 0]
    loss = CrossEntropyLoss(ignore_index=0)(jt.array(logits), jt.array(target))
    assert value(loss) == pytest.approx(nll[target != 0].mean(), rel=1e-5)
    everything_ignored = CrossEntropyLoss(ignore_index=0)(jt.array(logits), jt.zeros((2, 8, 8), dtype="int32"))
    assert value(everything_ignored) == 0.0


# ---- binary cross-entropy ------------------------------------------------------------------------

def test_bce_matches_numpy_and_is_stable_for_large_logits():
    x = np.array([[[100.0, -100.0], [0.0, 2.0]]], dtype=np.float32)
    y = np.array([[[0, 1], [1, 0]]], dtype=np.int32)
    x64 = x.astype(np.float64)
    per_pixel = y * np.logaddexp(0.0, -x64) + (1 - y) * np.logaddexp(0.0, x64)
    loss = BCEWithLogitsLoss()(one_logit(x), jt.array(y))
    assert value(loss) == pytest.approx(per_pixel.mean(), rel=1e-6)
    assert value(loss) == pytest.approx((100 + 100 + math.log(2) + np.logaddexp(0.0, 2.0)) / 4, rel=1e-6)

    weighted = BCEWithLogitsLoss(pos_weight=3.0)(one_logit(x), jt.array(y))
    assert value(weighted) == pytest.approx((per_pixel * np.where(y == 1, 3.0, 1.0)).mean(), rel=1e-6)


# ---- overlap losses: Dice, IoU, Tversky ----------------------------------------------------------

@pytest.mark.parametrize("make_logits", [two_class_logits, one_logit], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("loss, expected", [
    (DiceLoss(smooth=0.0), 1 - 3.0 / 5.0),                          # 2TP / (2TP + FP + FN) = 3 / 5
    (IoULoss(smooth=0.0), 1 - 1.5 / 3.5),                           # TP / (TP + FP + FN)
    (TverskyLoss(alpha=0.3, beta=0.7, smooth=0.0), 1 - 1.5 / 2.7),  # 1.5 / (1.5 + 0.3*0.5 + 0.7*1.5)
    (TverskyLoss(alpha=0.7, beta=0.3, smooth=0.0), 1 - 1.5 / 2.3),  # alpha weighs false positives
    (TverskyLoss(alpha=0.5, beta=0.5, smooth=0.0), 1 - 3.0 / 5.0),  # equals Dice
], ids=["dice", "iou", "tversky", "tversky-swapped", "tversky-as-dice"])
def test_overlap_losses_hand_example(make_logits, loss, expected):
    assert value(loss(make_logits(FG_LOGIT[None]), jt.array(HAND_TARGET))) == pytest.approx(expected, abs=1e-6)


def test_dice_include_background_averages_both_classes():
    # Background: p = 0.25, 0.75, 0.5, 0.5 vs g = 0, 0, 0, 1 -> Dice 2*0.5 / (2 + 1) = 1/3.
    loss = DiceLoss(include_background=True, smooth=0.0)(two_class_logits(FG_LOGIT[None]), jt.array(HAND_TARGET))
    assert value(loss) == pytest.approx(1 - (3 / 5 + 1 / 3) / 2, abs=1e-6)


def test_dice_batch_dice_sums_over_the_batch():
    # Second image: p(fg) = 0.5 everywhere, no foreground -> its own Dice is ~0.
    logits = two_class_logits(np.stack([FG_LOGIT, np.zeros((2, 2), np.float32)]))
    target = jt.array(np.concatenate([HAND_TARGET, np.zeros((1, 2, 2), np.int32)]))
    assert value(DiceLoss()(logits, target)) == pytest.approx(1 - (0.6 + 0.0) / 2, abs=1e-5)
    # Whole batch: TP = 1.5, sum(p) = 4, sum(g) = 3.
    assert value(DiceLoss(batch_dice=True)(logits, target)) == pytest.approx(1 - 3 / 7, abs=1e-5)


def test_dice_ignore_index_masks_pixels():
    # Ignoring the last pixel leaves p = 0.75, 0.25, 0.5 vs g = 1, 1, 1: Dice 3 / 4.5.
    target = HAND_TARGET.copy()
    target[0, 1, 1] = 255
    loss = DiceLoss(smooth=0.0, ignore_index=255)(two_class_logits(FG_LOGIT[None]), jt.array(target))
    assert value(loss) == pytest.approx(1 - 2 / 3, abs=1e-6)


@pytest.mark.parametrize("loss_cls", [DiceLoss, IoULoss, TverskyLoss])
def test_overlap_losses_are_near_zero_for_confident_correct_logits(loss_cls):
    target = np.zeros((2, 8, 8), dtype=np.int32)
    target[:, 2:6, 1:5] = 1
    target[1, 6:, 5:] = 2
    logits = np.eye(3, dtype=np.float32)[target].transpose(0, 3, 1, 2) * 30.0
    assert value(loss_cls()(jt.array(logits), jt.array(target))) < 1e-5
    wrong = np.roll(logits, 1, axis=1)
    assert value(loss_cls()(jt.array(wrong), jt.array(target))) > 0.99


# ---- focal ---------------------------------------------------------------------------------------

def test_focal_with_gamma_zero_equals_ce():
    logits, target = random_case(num_classes=3, seed=2)
    ce = CrossEntropyLoss()(jt.array(logits), jt.array(target))
    focal = FocalLoss(gamma=0.0)(jt.array(logits), jt.array(target))
    assert value(focal) == pytest.approx(value(ce), rel=1e-6)


def test_focal_hand_example():
    # p_t = 0.75, 0.75, 0.5, 0.5 -> mean of (1 - p_t)^2 * -log p_t.
    loss = FocalLoss(gamma=2.0)(two_class_logits(FG_LOGIT[None]), jt.array(np.array([[[1, 0], [1, 0]]])))
    expected = (2 * 0.25 ** 2 * -math.log(0.75) + 2 * 0.5 ** 2 * math.log(2)) / 4
    assert value(loss) == pytest.approx(expected, abs=1e-6)


def test_focal_alpha_matches_numpy_reference():
    logits, target = random_case(num_classes=3, seed=3)
    alpha = np.array([0.25, 0.5, 1.0])
    log_pt = np.take_along_axis(numpy_log_softmax(logits.astype(np.float64)), target[:, None], axis=1)[:, 0]
    expected = (-alpha[target] * (1 - np.exp(log_pt)) ** 2 * log_pt).mean()
    loss = FocalLoss(gamma=2.0, alpha=list(alpha))(jt.array(logits), jt.array(target))
    assert value(loss) == pytest.approx(expected, rel=1e-5)


def test_binary_focal_hand_example():
    # p(fg) = 0.75, 0.25, 0.5, 0.5 vs 1, 1, 1, 0 -> p_t = 0.75, 0.25, 0.5, 0.5; alpha_t = .25, .25, .25, .75.
    loss = FocalLoss(gamma=2.0, alpha=0.25)(one_logit(FG_LOGIT[None]), jt.array(HAND_TARGET))
    terms = [0.25 * 0.25 ** 2 * -math.log(0.75), 0.25 * 0.75 ** 2 * -math.log(0.25),
             0.25 * 0.5 ** 2 * math.log(2), 0.75 * 0.5 ** 2 * math.log(2)]
    assert value(loss) == pytest.approx(sum(terms) / 4, abs=1e-6)


# ---- gradients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("loss, num_classes", [
    (CrossEntropyLoss(), 3), (BCEWithLogitsLoss(), 1), (DiceLoss(), 3), (DiceLoss(), 1), (IoULoss(), 3),
    (FocalLoss(), 3), (FocalLoss(gamma=0.5), 1), (TverskyLoss(), 3),
], ids=["ce", "bce", "dice", "dice-sigmoid", "iou", "focal", "focal-sigmoid", "tversky"])
def test_gradient_reaches_the_logits(loss, num_classes):
    logits, target = random_case(num_classes=max(num_classes, 2), seed=4)
    logits = jt.array(logits[:, :num_classes])
    grad = jt.grad(loss(logits, jt.array(target % max(num_classes, 2))), logits).numpy()
    assert np.isfinite(grad).all()
    assert np.abs(grad).sum() > 0


# ---- input checks --------------------------------------------------------------------------------

def test_0_255_mask_is_rejected_with_a_hint():
    target = np.zeros((2, 8, 8), dtype=np.uint8)
    target[:, 2:4, 2:4] = 255
    with pytest.raises(ValueError, match=r"loss 'ce': target labels must be in \[0, 2\), found min 0 max 255 "
                                         r"\(binary masks must be 0/1 class indices, not 0/255\)"):
        CrossEntropyLoss()(jt.zeros((2, 2, 8, 8)), jt.array(target))
    with pytest.raises(ValueError, match="must be 0 or 1 for a single-logit"):
        DiceLoss()(jt.zeros((2, 1, 8, 8)), jt.array(target))


def test_check_labels_ranges_and_ignore_index():
    labels = jt.array(np.array([[[0, 1], [2, 255]]], dtype=np.int32))
    check_labels(labels, 3, ignore_index=255)
    with pytest.raises(ValueError, match=r"must be in \[0, 2\) or 255 \(ignore_index\), found min 0 max 2"):
        check_labels(labels, 2, ignore_index=255)
    with pytest.raises(ValueError, match="found min -1 max 0"):
        check_labels(jt.array(np.array([[[-1, 0]]])), 2)
    check_labels(jt.array(np.full((1, 2, 2), 255)), 2, ignore_index=255)  # all ignored is valid
    with pytest.raises(ValueError, match="integer class indices, got dtype float32"):
        check_labels(jt.zeros((1, 2, 2)), 2)


def test_shape_mismatches_are_reported():
    with pytest.raises(ValueError, match=r"logits must be 4-D N x C x H x W, got shape \[2, 8, 8\]"):
        DiceLoss()(jt.zeros((2, 8, 8)), jt.zeros((2, 8, 8), dtype="int32"))
    with pytest.raises(ValueError, match=r"target must be 3-D N x H x W"):
        DiceLoss()(jt.zeros((2, 2, 8, 8)), jt.zeros((2, 1, 8, 8), dtype="int32"))
    with pytest.raises(ValueError, match=r"logits shape \[2, 2, 8, 8\] and target shape \[2, 4, 4\] disagree"):
        DiceLoss()(jt.zeros((2, 2, 8, 8)), jt.zeros((2, 4, 4), dtype="int32"))


def test_class_count_mismatches_are_rejected():
    target = jt.zeros((1, 2, 2), dtype="int32")
    with pytest.raises(ValueError, match="use 'bce'"):
        CrossEntropyLoss()(jt.zeros((1, 1, 2, 2)), target)
    with pytest.raises(ValueError, match="use 'ce'"):
        BCEWithLogitsLoss()(jt.zeros((1, 2, 2, 2)), target)
    with pytest.raises(ValueError, match="weight has 2 entries but there are 3 classes"):
        CrossEntropyLoss(weight=[1, 2])(jt.zeros((1, 3, 2, 2)), target)


# ---- build_loss ----------------------------------------------------------------------------------

def test_build_loss_weighted_sum_equals_manual_sum_and_keeps_terms():
    logits, target = random_case(num_classes=3, seed=5)
    logits, target = jt.array(logits), jt.array(target)
    loss = build_loss({"ce": 0.5, "dice": 0.25, "focal": 2}, 3, ce={"weight": [1, 2, 3]}, focal={"gamma": 1})
    assert isinstance(loss, WeightedSumLoss)
    assert loss.last_terms() == {}
    total = value(loss(logits, target))
    ce = value(CrossEntropyLoss(weight=[1, 2, 3])(logits, target))
    dice = value(DiceLoss()(logits, target))
    focal = value(FocalLoss(gamma=1)(logits, target))
    assert total == pytest.approx(0.5 * ce + 0.25 * dice + 2 * focal, rel=1e-5)
    terms = loss.last_terms()
    assert list(terms) == ["ce", "dice", "focal"]
    assert terms["ce"] == pytest.approx(ce, rel=1e-5)
    assert terms["dice"] == pytest.approx(dice, rel=1e-5)
    assert terms["focal"] == pytest.approx(focal, rel=1e-5)


def test_build_loss_passes_ignore_index_to_every_term():
    target = np.zeros((2, 8, 8), dtype=np.int32)
    target[:, :, 4:] = 255
    loss = build_loss({"bce": 1, "dice": 1}, 1, ignore_index=255)
    # Confident, correct background on the counted half: both terms ~0.
    assert value(loss(jt.full((2, 1, 8, 8), -30.0), jt.array(target))) < 1e-5


@pytest.mark.parametrize("spec, num_classes, loss_args, message", [
    ({"dcie": 1}, 2, {}, r"^train\.loss: unknown loss 'dcie' \(did you mean 'dice'\?\)$"),
    ({"ce": -1}, 2, {}, r"train\.loss\.ce: weight must be a non-negative number, got -1"),
    ({"ce": "half"}, 2, {}, r"train\.loss\.ce: weight must be a non-negative number"),
    ({"ce": 0}, 2, {}, r"train\.loss: all weights are 0"),
    ({}, 2, {}, r"train\.loss: expected a non-empty mapping"),
    ({"bce": 1}, 2, {}, r"'bce' needs num_classes 1 .* use 'ce'"),
    ({"ce": 1}, 1, {}, r"'ce' needs num_classes >= 2 .* use 'bce'"),
    ({"ce": 1}, 2, {"ce": {"wieght": [1, 2]}}, r"train\.loss_args\.ce: unknown argument 'wieght'"),
    ({"ce": 1}, 3, {"ce": {"weight": [1, 2]}}, r"train\.loss_args\.ce: .*weight has 2 entries"),
    ({"ce": 1}, 2, {"focal": {"gamma": 2}}, r"train\.loss_args\.focal: .* not in train\.loss"),
    ({"ce": 1}, 2, {"focl": {"gamma": 2}}, r"train\.loss_args: unknown loss 'focl' \(did you mean 'focal'\?\)"),
    ({"focal": 1}, 2, {"focal": {"gamma": -1}}, r"train\.loss_args\.focal: .*gamma must be a non-negative"),
])
def test_build_loss_rejects_bad_configs(spec, num_classes, loss_args, message):
    with pytest.raises(ConfigError, match=message):
        build_loss(spec, num_classes, **loss_args)


# ---- deep supervision ----------------------------------------------------------------------------

def test_deep_supervision_resizes_smaller_aux_and_weights_it():
    _, target = random_case(num_classes=2, seed=6)
    target = jt.array(target)
    main = jt.array(np.random.default_rng(7).normal(size=(2, 2, 8, 8)).astype(np.float32))
    # A per-class constant 4x4 map stays the same constant after bilinear resizing to 8x8.
    aux_small = jt.array(np.broadcast_to(np.array([0.0, 1.0], np.float32)[None, :, None, None], (2, 2, 4, 4)))
    aux_full = jt.array(np.broadcast_to(np.array([0.0, 1.0], np.float32)[None, :, None, None], (2, 2, 8, 8)))
    base = build_loss({"ce": 1, "dice": 1}, 2)
    loss = DeepSupervisionLoss(base, [0.5])
    total = value(loss([main, aux_small], target))
    assert loss.last_terms()["ce"] == pytest.approx(value(CrossEntropyLoss()(main, target)), rel=1e-5)
    expected = value(base(main, target)) + 0.5 * value(base(aux_full, target))
    assert total == pytest.approx(expected, rel=1e-5)
    grad = jt.grad(loss([main, aux_small], target), aux_small).numpy()
    assert np.abs(grad).sum() > 0


def test_deep_supervision_needs_one_output_per_weight():
    loss = DeepSupervisionLoss(DiceLoss(), [0.5, 0.25])
    logits = jt.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"expected a list of 3 logits \(main \+ 2 auxiliary\), got 2 outputs"):
        loss([logits, logits], jt.zeros((1, 4, 4), dtype="int32"))
