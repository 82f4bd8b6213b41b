"""Training, evaluation and inference."""
from .evaluate import evaluate
from .inference import foreground_prob, labels_from_probs, predict_probs
from .schedule import LRSchedule, set_lr
from .trainer import Trainer, build_optimizer, format_report

__all__ = ["Trainer", "build_optimizer", "format_report", "evaluate", "predict_probs", "foreground_prob",
           "labels_from_probs", "LRSchedule", "set_lr"]
