"""Property-based tests (hypothesis) over the config loader, the dataset loader and the metrics."""
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jmedseg import metrics
from jmedseg.config import load_config
from jmedseg.data import load_split
from jmedseg.errors import ConfigError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
masks = st.integers(4, 24).flatmap(lambda n: arrays(np.bool_, (n, n), elements=st.booleans()))


def mask_pairs():
    return st.integers(4, 24).flatmap(
        lambda n: st.tuples(arrays(np.bool_, (n, n), elements=st.booleans()),
                            arrays(np.bool_, (n, n), elements=st.booleans()),
                            arrays(np.bool_, (n, n), elements=st.booleans())))


# -- metrics -------------------------------------------------------------------------------------
@SETTINGS
@given(mask_pairs())
def test_overlap_metrics_are_bounded_symmetric_and_consistent(pair):
    pred, gt, _ = pair
    d, j = metrics.dice(pred, gt), metrics.iou(pred, gt)
    assert 0.0 <= d <= 1.0 and 0.0 <= j <= 1.0
    assert d == pytest.approx(metrics.dice(gt, pred))
    assert j == pytest.approx(d / (2 - d))
    for fn in (metrics.precision, metrics.recall, metrics.specificity, metrics.accuracy):
        assert 0.0 <= fn(pred, gt) <= 1.0


@SETTINGS
@given(mask_pairs())
def test_hd95_never_exceeds_hd_and_assd_is_bounded(pair):
    pred, gt, _ = pair
    hd, hd95, assd = metrics.hd(pred, gt), metrics.hd95(pred, gt), metrics.assd(pred, gt)
    assert hd95 <= hd + 1e-9 and assd <= hd + 1e-9
    assert hd == pytest.approx(metrics.hd(gt, pred))


@SETTINGS
@given(mask_pairs(), st.integers(0, 2**31 - 1))
def test_pixels_outside_the_fov_never_change_a_metric(pair, seed):
    pred, gt, fov = pair
    rs = np.random.RandomState(seed)
    pred2, gt2 = pred.copy(), gt.copy()
    outside = ~fov
    pred2[outside] = rs.rand(int(outside.sum())) > 0.5
    gt2[outside] = rs.rand(int(outside.sum())) > 0.5
    for fn in (metrics.dice, metrics.iou, metrics.precision, metrics.recall, metrics.specificity,
               metrics.accuracy, metrics.hd95):
        assert fn(pred, gt, fov=fov) == pytest.approx(fn(pred2, gt2, fov=fov), nan_ok=True)
    prob = rs.rand(*pred.shape)
    prob2 = prob.copy()
    prob2[outside] = rs.rand(int(outside.sum()))
    assert metrics.auc(prob, gt, fov=fov) == pytest.approx(metrics.auc(prob2, gt2, fov=fov), nan_ok=True)


# -- config loader -------------------------------------------------------------------------------
keys = st.sampled_from(["train.lr", "train.batch_size", "train.iterations", "data.patch_size",
                        "eval.threshold", "train.weight_decay", "data.foreground_bias"])


# Jittor's kernels switch the CPU to flush-to-zero, so subnormal floats cannot be drawn once it has run.
config_values = st.one_of(st.integers(-5, 500), st.floats(-2, 2, allow_nan=False, allow_subnormal=False),
                          st.text(max_size=5), st.booleans(), st.none())


@SETTINGS
@given(st.dictionaries(keys, config_values, max_size=4))
def test_config_loader_accepts_or_raises_config_error(tmp_path_factory, overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    try:
        cfg = load_config(None, items)
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    cfg.dump(path)
    assert load_config(path).to_dict() == cfg.to_dict()


@SETTINGS
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=12))
def test_unknown_keys_are_config_errors(key):
    try:
        load_config(None, [f"{key}=1"])
    except ConfigError as err:
        assert "\n" not in str(err)


# -- dataset loader ------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(8, 40), st.integers(8, 40), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
def test_dataset_loader_round_trip(tmp_path_factory, height, width, gray, zero_one, seed):
    rs = np.random.RandomState(seed)
    root = tmp_path_factory.mktemp("ds")
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    image = rs.randint(0, 256, (height, width) if gray else (height, width, 3), dtype=np.uint8)
    mask = rs.rand(height, width) > 0.5
    cv2.imwrite(str(root / "train" / "images" / "a.png"), image)
    cv2.imwrite(str(root / "train" / "masks" / "a.png"), mask.astype(np.uint8) * (1 if zero_one else 255))
    sample = load_split(root, "train", in_channels=3)[0]
    assert sample.image.shape == (height, width, 3) and sample.image.dtype == np.float32
    np.testing.assert_array_equal(sample.mask, mask.astype(np.int64))
    if image.std() > 0:
        assert np.abs(sample.image.mean(axis=(0, 1))).max() < 1e-3
