"""The training loop: config in, a run folder with checkpoints, logs and a test report out.

Run folder (``work_dir``): ``config.yaml`` (resolved config), ``log.csv`` (one row per logged
step: loss, learning rate, images/s, and with ``model.stn`` the transforms' distance from the
identity), ``val.csv`` and ``history.json`` (validation metrics), ``best.npz`` (best validation Dice,
or the last weights when there is no validation split), ``last.npz`` (weights and optimizer
state) and ``test_report.json``. With ``train.ema_decay`` > 0 the weights validated and kept in
``best.npz`` are an exponential moving average of the trained ones (:class:`.ema.ModelEMA`).
"""
import csv
import io
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model_zoo import create_model
from model_zoo.stn import wrap_with_stn
from model_zoo.backend import jt, set_device

from .. import distributed as dist
from ..checkpoint import (load_checkpoint, load_model_state, load_optimizer_state, read_checkpoint,
                          save_checkpoint)
from ..data import TrainSampler, build_datasets
from ..errors import CheckpointError, ConfigError
from ..io import write_json, write_text
from ..losses import DeepSupervisionLoss, build_loss
from ..ssl import load_encoder_weights
from .ema import ModelEMA
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
        # Columns in order of first appearance: rows resumed from an older checkpoint may lack newer ones.
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` following ``cfg.train``; see the module docstring.

    Interruption-safe: every ``train.checkpoint_interval`` steps ``last.npz`` holds the weights,
    the optimizer buffers, the sampler's random state and the trainer's own state (step, logs,
    best Dice, partial log window, learning-rate scale). :meth:`resume` restores all of it, and
    Jittor's generator is re-seeded from (seed, step) every step, so a run killed at any moment
    and resumed produces the same losses and weights as an uninterrupted run.

    Data-parallel under ``mpirun -np N`` (:mod:`jmedseg.distributed`): ``train.batch_size`` is the
    global batch. Every rank draws the same global batch from one sampler stream and computes the
    forward and backward pass of its own contiguous shard of ``batch_size / N`` items (so the ranks
    see disjoint parts of every epoch); Jittor averages the gradients and synchronises BatchNorm
    over the global batch. The per-image losses (cross-entropy means, per-image Dice) average to the
    single-process loss, so an N-rank run follows the 1-rank run with the same global batch. Only
    rank 0 validates, tests, shows progress and writes files; the logged loss is the mean over ranks.

    Args:
        cfg: a resolved :class:`jmedseg.config.Config`.
        work_dir: the run folder (created).
        progress: show tqdm bars.
    """

    def __init__(self, cfg, work_dir, progress=True):
        dist.check_backend()
        self.cfg, self.work_dir, self.progress = cfg, Path(work_dir), progress and dist.is_main()
        self.device = set_device(cfg.device)
        self.seed = int(cfg.train.seed)
        jt.set_global_seed(self.seed)
        np.random.seed(self.seed)
        m, d, t = cfg.model, cfg.data, cfg.train
        self.num_classes = int(m.num_classes)
        self.datasets = build_datasets(
            d.root, train_split=d.train_split, val_split=d.val_split, test_split=d.test_split,
            val_fraction=d.val_fraction, val_seed=d.val_seed, num_classes=self.num_classes,
            in_channels=m.in_channels, preprocess=d.preprocess)
        self.model = create_model(m.name, in_channels=m.in_channels, num_classes=m.num_classes, **dict(m.args))
        self.model_spec = {"name": m.name, "args": dict(self.model.model_args), "stn": bool(m.stn),
                           "stn_tolerance": float(m.stn_tolerance)}
        self.ssl_tensors = load_encoder_weights(self.model, m.ssl) if m.ssl else 0
        if m.stn:
            self.model = wrap_with_stn(self.model, identity_tolerance=m.stn_tolerance)
        dist.local_batch_size(t.batch_size, "train.batch_size")
        # Jittor computes initial weights lazily, drawing from whatever seed is current at the first
        # forward pass; materialise them now, from the run's seed, before the per-step reseeding.
        jt.sync(list(self.model.state_dict().values()))
        dist.broadcast_state(self.model)
        self.ema = ModelEMA(self.model, t.ema_decay) if t.ema_decay else None
        self.sampler = TrainSampler(self.datasets["train"], batch_size=t.batch_size, mode=d.mode,
                                    patch_size=d.patch_size, image_size=d.image_size,
                                    foreground_bias=d.foreground_bias, flip=d.flip, seed=self.seed,
                                    augment=d.augment)
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
        self.lr_scale, self.nan_retries_used = 1.0, 0
        self.window_loss, self.window_steps, self.elapsed = 0.0, 0, 0.0
        self.window_stn_dist_sq = 0.0  # sum over the log window of the STN's ||θ - I||² (model.stn)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self):
        """The trainer's own state (JSON-serialisable), saved in ``last.npz``."""
        return {"step": self.step, "best_dice": None if self.best_dice == -math.inf else self.best_dice,
                "log_rows": self.log_rows, "val_rows": self.val_rows, "lr_scale": self.lr_scale,
                "nan_retries_used": self.nan_retries_used, "window_loss": self.window_loss,
                "window_stn_dist_sq": self.window_stn_dist_sq,
                "window_steps": self.window_steps, "elapsed": self.elapsed,
                "sampler": self.sampler.state_dict(), "ema_updates": self.ema.updates if self.ema else None}

    def _load_state(self, state):
        self.step = int(state["step"])
        self.best_dice = -math.inf if state["best_dice"] is None else float(state["best_dice"])
        self.log_rows, self.val_rows = list(state["log_rows"]), list(state["val_rows"])
        self.lr_scale, self.nan_retries_used = float(state["lr_scale"]), int(state["nan_retries_used"])
        self.window_loss, self.window_steps = float(state["window_loss"]), int(state["window_steps"])
        self.window_stn_dist_sq = float(state.get("window_stn_dist_sq", 0.0))  # absent from checkpoints made before it
        self.elapsed = float(state["elapsed"])
        self.sampler.load_state_dict(state["sampler"])

    def _meta(self, **extra):
        return dict(model=dict(self.model_spec), config=self.cfg.to_dict(), step=self.step, **extra)

    def _kept_weights(self):
        """Context in which the model holds the weights a run validates and keeps: the EMA when on."""
        return self.ema.applied_to(self.model) if self.ema else nullcontext(self.model)

    def _save(self, name, **extra):
        """Write the kept weights (see :meth:`_kept_weights`) with the run's metadata."""
        if not dist.is_main():
            return
        with self._kept_weights():
            save_checkpoint(self.work_dir / name, self.model, self._meta(**extra))

    def save_last(self):
        """Write ``last.npz``: everything :meth:`resume` needs (the trained weights, not the EMA,
        which is stored beside them)."""
        if dist.is_main():
            save_checkpoint(self.work_dir / "last.npz", self.model, self._meta(trainer_state=self.state_dict()),
                            optimizer=self.optimizer, extra_arrays=self.ema.arrays() if self.ema else None)
        dist.barrier()  # complete on disk before any rank may reload it (NaN recovery)

    def resume(self, path=None):
        """Restore weights, optimizer, sampler and trainer state from ``path`` (default ``last.npz``)."""
        path = Path(path) if path else self.work_dir / "last.npz"
        meta, arrays = read_checkpoint(path)
        if "trainer_state" not in meta:
            raise CheckpointError(f"{path}: holds weights only (no optimizer/trainer state); "
                                  "resume needs the run's last.npz")
        if meta["model"] != self._meta()["model"]:
            raise CheckpointError(f"{path}: was written for model {meta['model']}, not {self._meta()['model']}")
        load_model_state(self.model, arrays, source=str(path))
        load_optimizer_state(self.optimizer, arrays, meta, source=str(path))
        if self.ema:
            self.ema.load_arrays(arrays, meta["trainer_state"].get("ema_updates"), source=str(path))
        self._load_state(meta["trainer_state"])
        return self.step

    # -- training --------------------------------------------------------------------------------
    def _train_step(self, images, masks):
        images, masks = dist.shard(images), dist.shard(masks)
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
        stn_dist_sq = None
        if self.cfg.model.stn:
            # In the loss even at weight 0, so the logged distance is computed with the step's own weights.
            stn_dist_sq = self.model.stn_penalty()
            loss = loss + self.cfg.train.stn_penalty * stn_dist_sq
        if self.cfg.train.grad_clip:
            self.optimizer.zero_grad()
            self.optimizer.backward(loss)
            self.optimizer.clip_grad_norm(self.cfg.train.grad_clip)
            self.optimizer.step()
        else:
            self.optimizer.step(loss)
        if dist.is_distributed():
            # BatchNorm's running statistics hold pending all-reduces; run them now, on every rank
            # in the same order, not lazily when rank 0 alone reads them in validation.
            jt.sync_all()
        return (dist.mean_over_ranks(loss.item()),
                None if stn_dist_sq is None else dist.mean_over_ranks(stn_dist_sq.item()))

    def _recover_from_nan(self, loss, lr):
        """Reload ``last.npz`` with a lower learning rate, or stop naming the step."""
        t = self.cfg.train
        last = self.work_dir / "last.npz"
        message = f"loss became {loss} at step {self.step + 1} (lr {lr:.3g})"
        if self.nan_retries_used >= t.nan_retries or not last.exists():
            hint = (f"; the last good checkpoint is {last} (resume with --resume, e.g. with a lower train.lr)"
                    if last.exists() else "; no checkpoint was written before it")
            raise FloatingPointError(message + hint)
        retries, scale = self.nan_retries_used + 1, self.lr_scale * t.nan_lr_factor
        self.resume(last)
        self.nan_retries_used, self.lr_scale = retries, scale
        tqdm.write(f"{message}: retry {retries}/{t.nan_retries} from step {self.step} with lr x{scale:g}")

    def validate(self):
        """Evaluate on the validation split (rank 0 only); keep ``best.npz`` by pooled Dice."""
        val = self.datasets.get("val")
        if not val or not dist.is_main():
            return None
        e = self.cfg.eval
        with self._kept_weights():
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
        """Run the remaining steps (all of them, or those after :meth:`resume`)."""
        t, cfg = self.cfg.train, self.cfg
        if dist.is_main():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(self.work_dir / "config.yaml")
        self.model.train()
        batches = iter(self.sampler)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {cfg.model.name}",
                   disable=not self.progress, dynamic_ncols=True)
        clock, window_start = time.perf_counter(), time.perf_counter()
        while self.step < self.total_steps:
            lr = self.schedule.lr_at(self.step) * self.lr_scale
            set_lr(self.optimizer, lr)
            # Dropout and other random layers draw from a generator seeded by (seed, step), so a
            # resumed run draws what an uninterrupted one would. Jittor's nearby seeds give
            # correlated streams, hence the SeedSequence mixing.
            # Under MPI each rank draws its own stream.
            entropy = [self.seed, self.step] + ([dist.rank()] if dist.is_distributed() else [])
            jt.set_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1))
            images, masks = next(batches)
            loss, stn_dist_sq = self._train_step(images, masks)
            if not math.isfinite(loss):
                self._recover_from_nan(loss, lr)
                bar.n = self.step
                continue
            self.step += 1
            if self.ema:
                self.ema.update(self.model)
            self.window_loss, self.window_steps = self.window_loss + loss, self.window_steps + 1
            self.window_stn_dist_sq += stn_dist_sq or 0.0
            bar.update(1)
            now = time.perf_counter()
            self.elapsed, clock = self.elapsed + now - clock, now
            if self.step % t.log_interval == 0 or self.step == self.total_steps:
                row = {"step": self.step, "lr": lr, "loss": self.window_loss / self.window_steps,
                       "images_per_s": self.window_steps * t.batch_size / max(now - window_start, 1e-9),
                       "elapsed_s": self.elapsed}
                if cfg.model.stn:
                    # Root mean square distance of the STN's transforms from the identity: watch it drift.
                    row["stn_theta_dist"] = math.sqrt(self.window_stn_dist_sq / self.window_steps)
                self.log_rows.append(row)
                if dist.is_main():
                    write_text(self.work_dir / "log.csv", _rows_to_csv(self.log_rows))
                shown = {"stn_theta": f"{row['stn_theta_dist']:.3f}"} if cfg.model.stn else {}
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}", img_s=f"{row['images_per_s']:.1f}", **shown)
                self.window_loss, self.window_steps, window_start = 0.0, 0, time.perf_counter()
                self.window_stn_dist_sq = 0.0
            if self.step % t.val_interval == 0 or self.step == self.total_steps:
                row = self.validate()
                if row:
                    bar.write(f"step {self.step}: val dice {row['dice']:.4f} (best {self.best_dice:.4f})")
            if self.step % t.checkpoint_interval == 0 or self.step == self.total_steps:
                self.save_last()
            clock = time.perf_counter()
        bar.close()
        if not self.datasets.get("val"):
            self._save("best.npz")
        if dist.is_main():
            write_json(self.work_dir / "history.json",
                       {"train": self.log_rows, "val": self.val_rows, "train_time_s": self.elapsed,
                        "best_val_dice": None if self.best_dice == -math.inf else self.best_dice})
        return self.val_rows[-1] if self.val_rows else None

    def test(self):
        """Evaluate ``best.npz`` on the test split (rank 0 only); writes ``test_report.json`` and returns it."""
        test = self.datasets.get("test")
        if not test or not dist.is_main():
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
