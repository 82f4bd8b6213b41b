"""The training loop: config in, a run folder with checkpoints, logs and a test report out.

Run folder (``work_dir``): ``config.yaml`` (resolved config), ``log.csv`` (one row per logged
step), ``val.csv`` and ``history.json`` (validation metrics), ``best.npz`` (best validation Dice,
or the last weights when there is no validation split), ``last.npz`` (weights and optimizer
state) and ``test_report.json``.
"""
import csv
import io
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model_zoo import create_model
from model_zoo.backend import jt, set_device

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import TrainSampler, build_datasets
from ..errors import ConfigError
from ..io import write_json, write_text
from ..losses import DeepSupervisionLoss, build_loss
from .evaluate import evaluate
from .schedule import LRSchedule, set_lr

__all__ = ["Trainer", "build_optimizer", "format_report"]


def build_optimizer(name, params, lr, weight_decay=0.0, momentum=0.9):
    """Adam, AdamW or SGD (with momentum) over ``params``."""
    if name == "adam":
        return jt.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return jt.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return jt.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"train.optimizer: unknown optimizer {name!r} (choose adam, adamw or sgd)")


def _rows_to_csv(rows):
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` following ``cfg.train``; see the module docstring.

    Args:
        cfg: a resolved :class:`jmedseg.config.Config`.
        work_dir: the run folder (created).
        progress: show tqdm bars.
    """

    def __init__(self, cfg, work_dir, progress=True):
        self.cfg, self.work_dir, self.progress = cfg, Path(work_dir), progress
        self.device = set_device(cfg.device)
        seed = int(cfg.train.seed)
        jt.set_global_seed(seed)
        np.random.seed(seed)
        m, d, t = cfg.model, cfg.data, cfg.train
        self.num_classes = int(m.num_classes)
        self.datasets = build_datasets(
            d.root, train_split=d.train_split, val_split=d.val_split, test_split=d.test_split,
            val_fraction=d.val_fraction, val_seed=d.val_seed, num_classes=self.num_classes,
            in_channels=m.in_channels, preprocess=d.preprocess)
        self.model = create_model(m.name, in_channels=m.in_channels, num_classes=m.num_classes, **dict(m.args))
        self.sampler = TrainSampler(self.datasets["train"], batch_size=t.batch_size, mode=d.mode,
                                    patch_size=d.patch_size, image_size=d.image_size,
                                    foreground_bias=d.foreground_bias, flip=d.flip, seed=seed)
        self.total_steps = int(t.epochs * self.sampler.epoch_length if t.epochs else t.iterations)
        self.optimizer = build_optimizer(t.optimizer, self.model.parameters(), t.lr, t.weight_decay, t.momentum)
        self.schedule = LRSchedule(t.scheduler, t.lr, self.total_steps, warmup_iters=t.warmup_iters,
                                   min_lr=t.min_lr, poly_power=t.poly_power, step_size=t.step_size,
                                   step_gamma=t.step_gamma)
        self.loss_fn = build_loss(dict(t.loss), self.num_classes, **dict(t.loss_args))
        if t.aux_weights:
            self.loss_fn = DeepSupervisionLoss(self.loss_fn, list(t.aux_weights))
        self.step = 0
        self.best_dice = -math.inf
        self.log_rows, self.val_rows = [], []

    # -- bookkeeping ---------------------------------------------------------------------------
    def _meta(self, **extra):
        m = self.cfg.model
        return dict(model={"name": m.name, "args": dict(self.model.model_args)},
                    config=self.cfg.to_dict(), step=self.step, **extra)

    def _save(self, name, with_optimizer=False, **extra):
        save_checkpoint(self.work_dir / name, self.model, self._meta(**extra),
                        optimizer=self.optimizer if with_optimizer else None)

    # -- training --------------------------------------------------------------------------------
    def _train_step(self, images, masks):
        logits = self.model(jt.array(images))
        multi = isinstance(logits, (list, tuple))
        if isinstance(self.loss_fn, DeepSupervisionLoss):
            expected = 1 + len(self.cfg.train.aux_weights)
            if not multi or len(logits) != expected:
                got = len(logits) if multi else 1
                raise ConfigError(f"train.aux_weights: {len(self.cfg.train.aux_weights)} weights need "
                                  f"{expected} outputs but model {self.cfg.model.name!r} returns {got} in "
                                  f"training (deep supervision off, or a different number of side outputs)")
        elif multi:
            logits = logits[0]
        loss = self.loss_fn(logits, jt.array(masks))
        if self.cfg.train.grad_clip:
            self.optimizer.zero_grad()
            self.optimizer.backward(loss)
            self.optimizer.clip_grad_norm(self.cfg.train.grad_clip)
            self.optimizer.step()
        else:
            self.optimizer.step(loss)
        return loss.item()

    def validate(self):
        """Evaluate on the validation split; keep ``best.npz`` by pooled Dice."""
        val = self.datasets.get("val")
        if not val:
            return None
        e = self.cfg.eval
        summary = evaluate(self.model, val, self.num_classes, threshold=e.threshold, use_fov=e.use_fov,
                           distances=False, tile_size=e.tile_size, tile_overlap=e.tile_overlap)
        self.model.train()
        dice = summary["pooled"]["dice"]
        row = {"step": self.step, "dice": dice, "iou": summary["pooled"]["iou"],
               "auc": summary["pooled"].get("auc"), "mean_dice": summary["mean"]["dice"]}
        self.val_rows.append(row)
        write_text(self.work_dir / "val.csv", _rows_to_csv(self.val_rows))
        if dice > self.best_dice:
            self.best_dice = dice
            self._save("best.npz", val_dice=dice)
        return row

    def train(self):
        """Run all steps; returns the last validation row (or None)."""
        t, cfg = self.cfg.train, self.cfg
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(self.work_dir / "config.yaml")
        self.model.train()
        batches = iter(self.sampler)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {cfg.model.name}",
                   disable=not self.progress, dynamic_ncols=True)
        start, last_val = time.perf_counter(), None
        window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
        while self.step < self.total_steps:
            lr = self.schedule.lr_at(self.step)
            set_lr(self.optimizer, lr)
            images, masks = next(batches)
            loss = self._train_step(images, masks)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {self.step} (lr {lr:.3g}); "
                                         f"the last good checkpoint is {self.work_dir / 'last.npz'}")
            self.step += 1
            window_loss, window_steps = window_loss + loss, window_steps + 1
            bar.update(1)
            if self.step % t.log_interval == 0 or self.step == self.total_steps:
                elapsed = time.perf_counter() - window_start
                row = {"step": self.step, "lr": lr, "loss": window_loss / window_steps,
                       "images_per_s": window_steps * t.batch_size / max(elapsed, 1e-9),
                       "elapsed_s": time.perf_counter() - start}
                self.log_rows.append(row)
                write_text(self.work_dir / "log.csv", _rows_to_csv(self.log_rows))
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}", img_s=f"{row['images_per_s']:.1f}")
                window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
            if self.step % t.val_interval == 0 or self.step == self.total_steps:
                last_val = self.validate()
                if last_val:
                    bar.write(f"step {self.step}: val dice {last_val['dice']:.4f} (best {self.best_dice:.4f})")
                self._save("last.npz", with_optimizer=True)
        bar.close()
        if not self.datasets.get("val"):
            self._save("best.npz")
        write_json(self.work_dir / "history.json",
                   {"train": self.log_rows, "val": self.val_rows, "train_time_s": time.perf_counter() - start,
                    "best_val_dice": None if self.best_dice == -math.inf else self.best_dice})
        return last_val

    def test(self):
        """Evaluate ``best.npz`` on the test split; writes ``test_report.json`` and returns it."""
        test = self.datasets.get("test")
        if not test:
            return None
        model, meta = load_checkpoint(self.work_dir / "best.npz")
        e = self.cfg.eval
        summary = evaluate(model, test, self.num_classes, threshold=e.threshold, use_fov=e.use_fov,
                           distances=e.distances, tile_size=e.tile_size, tile_overlap=e.tile_overlap,
                           tta=e.tta, progress=self.progress, desc="test")
        report = {"checkpoint": str(self.work_dir / "best.npz"), "step": meta.get("step"),
                  "split": self.cfg.data.test_split, "num_images": len(test), **summary}
        write_json(self.work_dir / "test_report.json", report)
        return report


def format_report(summary, title="test"):
    """A fixed-width table of pooled and per-image-mean metrics."""
    names = ["dice", "iou", "precision", "recall", "specificity", "accuracy", "auc", "hd", "hd95", "assd"]
    lines = [f"{title:<10}" + "".join(f"{n:>12}" for n in names)]
    for kind in ("pooled", "mean"):
        values = summary.get(kind, {})
        cells = []
        for n in names:
            v = values.get(n)
            cells.append(f"{v:>12.4f}" if isinstance(v, (int, float)) and v is not None else f"{'-':>12}")
        lines.append(f"{kind:<10}" + "".join(cells))
    return "\n".join(lines)
