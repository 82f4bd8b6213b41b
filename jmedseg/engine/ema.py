"""An exponential moving average (EMA) of a model's weights, the weights a run validates and keeps."""
from contextlib import contextmanager

import numpy as np

from ..checkpoint import arrays_under, model_state
from ..errors import CheckpointError

__all__ = ["ModelEMA"]

_PREFIX = "ema/"


class ModelEMA:
    """Running average of every parameter and BatchNorm statistic of a model, held as numpy arrays.

    After the n-th optimizer step (n = 0, 1, …) ``update`` sets ``ema = d * ema + (1 - d) * weights``
    with ``d = min(decay, (1 + n) / (10 + n))``: the ramp keeps the early average from being
    dominated by the initial weights (the schedule of timm's ``ModelEma`` and MMSegmentation's EMA
    hook). Non-floating entries are copied, not averaged.

    Args:
        model: the trained model; its current weights start the average.
        decay: the decay in (0, 1), e.g. 0.999 (an average over the last ~1000 steps).
    """

    def __init__(self, model, decay):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.state = model_state(model)

    def decay_at(self, updates):
        """The decay applied by the update that follows ``updates`` earlier ones."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    def update(self, model):
        """Fold the model's current weights into the average."""
        d = self.decay_at(self.updates)
        for key, value in model_state(model).items():
            average = self.state[key]
            if np.issubdtype(average.dtype, np.floating):
                average *= d
                average += (1.0 - d) * value
            else:
                self.state[key] = value
        self.updates += 1

    @contextmanager
    def applied_to(self, model):
        """Give ``model`` the averaged weights inside the block, its own weights back after it."""
        own = model_state(model)
        model.load_parameters(self.state)
        try:
            yield model
        finally:
            model.load_parameters(own)

    def arrays(self):
        """The average as checkpoint arrays (``ema/<state-dict key>``)."""
        return {_PREFIX + key: value for key, value in self.state.items()}

    def load_arrays(self, arrays, updates, source="checkpoint"):
        """Restore the average written by :meth:`arrays` after ``updates`` updates."""
        given = arrays_under(arrays, _PREFIX)
        if set(given) != set(self.state) or any(given[k].shape != v.shape for k, v in self.state.items()):
            raise CheckpointError(f"{source}: holds no weight average of this model (train.ema_decay "
                                  "was 0 in the run that wrote it, or the model differs)")
        self.state = {k: np.array(given[k], dtype=self.state[k].dtype) for k in self.state}
        self.updates = int(updates)
