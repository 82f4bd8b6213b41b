"""Real-data checks on DRIVE (skipped with a message when ../shared/data or $JMEDSEG_DATA lacks it)."""
import numpy as np
import pytest

from jmedseg.data import build_datasets, read_image_file
from jmedseg.engine import evaluate
from jmedseg.metrics import SegmentationEvaluator
from model_zoo import create_model
from model_zoo.backend import jt


def test_second_observer_matches_the_published_human_baseline(drive_root):
    # DRIVE's second observer, scored against the first inside the FOV with pixels pooled, has the
    # accuracy 0.9473 reported since Staal et al. 2004 (and Dice ~0.79): a check of the whole
    # metric protocol on real data.
    evaluator = SegmentationEvaluator(compute_distances=False)
    names = sorted(p.name for p in (drive_root / "test" / "masks").iterdir())
    assert len(names) == 20
    for name in names:
        gt = read_image_file(drive_root / "test" / "masks" / name) > 0
        second = read_image_file(drive_root / "test" / "masks_2nd" / name) > 0
        fov = read_image_file(drive_root / "test" / "fov" / name) > 0
        evaluator.add(second.astype(np.int64), gt.astype(np.int64), fov=fov, name=name)
    pooled = evaluator.summary()["pooled"]
    assert pooled["accuracy"] == pytest.approx(0.9473, abs=5e-4)
    assert pooled["dice"] == pytest.approx(0.789, abs=2e-3)


def test_all_40_images_load_and_evaluate(drive_root):
    data = build_datasets(drive_root, val_fraction=0, in_channels=1, preprocess="green_clahe")
    assert len(data["train"]) == 20 and len(data["test"]) == 20 and data["val"] is None
    for sample in list(data["train"]) + list(data["test"]):
        assert sample.image.shape == (584, 565, 1) and sample.mask.shape == (584, 565)
        assert sample.fov is not None and set(np.unique(sample.mask)) <= {0, 1}
        assert abs(float(sample.image[sample.fov].mean())) < 1e-3
    jt.set_global_seed(0)
    model = create_model("unet", in_channels=1, base_channels=4, depth=2)
    summary = evaluate(model, data["test"], num_classes=2, distances=False)
    assert summary["num_images"] == 20 and len(summary["per_image"]) == 20
    assert 0.0 <= summary["pooled"]["dice"] <= 1.0
    assert 0.0 <= summary["pooled"]["auc"] <= 1.0
