"""Learning-rate schedules as pure functions of the step, correct from step 0.

Jittor's CosineAnnealingLR runs one epoch late, so the trainer sets the rate itself each step
from ``lr_at(step)``: linear warmup from ``lr * warmup_ratio`` to ``lr`` over ``warmup_iters``
steps, then the schedule over the remaining steps.
"""
import math

__all__ = ["LRSchedule", "set_lr"]


class LRSchedule:
    """``lr_at(step)`` for step in [0, total_steps).

    Args:
        kind: ``'poly'`` (lr·(1-t)^power), ``'cosine'`` (min_lr + (lr-min_lr)·(1+cos πt)/2),
            ``'step'`` (lr·gamma^⌊step/step_size⌋) or ``'constant'``; t runs from 0 after warmup
            to 1 at the last step.
    """

    def __init__(self, kind, lr, total_steps, warmup_iters=0, min_lr=0.0, poly_power=0.9,
                 step_size=1000, step_gamma=0.1, warmup_ratio=0.1):
        if kind not in ("poly", "cosine", "step", "constant"):
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind, self.lr, self.total = kind, lr, max(1, total_steps)
        self.warmup, self.min_lr, self.power = min(warmup_iters, self.total - 1), min_lr, poly_power
        self.step_size, self.gamma, self.warmup_ratio = max(1, step_size), step_gamma, warmup_ratio

    def lr_at(self, step):
        if step < self.warmup:
            start = self.lr * self.warmup_ratio
            return start + (self.lr - start) * step / self.warmup
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** ((step - self.warmup) // self.step_size)
        span = max(1, self.total - 1 - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        if self.kind == "poly":
            return self.min_lr + (self.lr - self.min_lr) * (1 - t) ** self.power
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(optimizer, lr):
    """Set the rate on the optimizer and every parameter group (Jittor reads either)."""
    optimizer.lr = lr
    for group in optimizer.param_groups:
        group["lr"] = lr
