"""Every registered network learns the synthetic vessel task within a small fixed budget.

Budget: the model's ``tiny`` arguments, 200 Adam steps (lr 2e-3, poly) of 8 random 64x64 patches,
CE + Dice. Pass: pooled test Dice ≥ 0.55 and at least 0.3 above the all-foreground predictor
(the all-background predictor scores 0). A network that collapses fails here.

Marked ``slow`` (1-4 minutes per network on 2 CPU cores, over an hour for the whole registry), so
the default suite skips it; run it with ``python -m pytest -q -s -m slow tests/test_trainability.py``.
"""
import json

import numpy as np
import pytest

from jmedseg.config import load_config
from jmedseg.engine import Trainer
from jmedseg.metrics import dice
from model_zoo import list_models, tiny_args

STEPS, MIN_DICE, MARGIN = 200, 0.55, 0.3


@pytest.fixture(scope="module")
def all_foreground_dice():
    from jmedseg.data import build_datasets

    test = build_datasets(None)["test"]
    gt = np.concatenate([s.mask[s.fov].ravel() for s in test])
    return dice(np.ones_like(gt), gt)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_trains_above_trivial_predictors(name, tmp_path, all_foreground_dice):
    cfg = load_config(None, [f"model.name={name}", f"model.args={json.dumps(tiny_args(name))}",
                             f"train.iterations={STEPS}",
                             "train.batch_size=8", "data.patch_size=64", "train.lr=2e-3",
                             f"train.val_interval={STEPS}", "eval.distances=false"])
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.train()
    report = trainer.test()
    score = report["pooled"]["dice"]
    print(f"{name}: synthetic test Dice {score:.4f} AUC {report['pooled']['auc']:.4f} after {STEPS} steps")
    assert score >= MIN_DICE and score >= all_foreground_dice + MARGIN, (name, score, all_foreground_dice)
