"""Model utilities: parameter and FLOP counts."""
import numpy as np

from .backend import jt

__all__ = ["count_parameters", "count_flops"]

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def count_parameters(model):
    """Learnable parameters (BatchNorm running statistics excluded, whatever the train/eval mode)."""
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()
                   if not p.name().endswith(_BUFFER_SUFFIXES)))


def count_flops(model, input_shape=(1, 3, 512, 512)):
    """Forward FLOPs of convolutions, transposed convolutions and linear layers (2 × multiply-adds).

    Counted with forward hooks on one eval-mode pass over a zero input. Matrix products written
    inline (e.g. attention's ``bmm``) are not modules and are not counted; models that rely on them
    add their share through a ``extra_flops(input_shape)`` method.
    """
    total = 0
    hooked = []

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        if isinstance(module, jt.nn.ConvTranspose2d):
            total += 2 * int(np.prod(inputs[0].shape)) * module.out_channels * kh * kw // module.groups
        else:
            total += 2 * int(np.prod(output.shape)) * module.in_channels * kh * kw // module.groups

    def linear_hook(module, inputs, output):
        nonlocal total
        total += 2 * int(np.prod(output.shape)) * module.in_features

    for m in model.modules():
        if isinstance(m, (jt.nn.Conv2d, jt.nn.ConvTranspose2d)):
            m.register_forward_hook(conv_hook)
            hooked.append(m)
        elif isinstance(m, jt.nn.Linear):
            m.register_forward_hook(linear_hook)
            hooked.append(m)
    model.eval()
    try:
        with jt.no_grad():
            model(jt.zeros(input_shape))
    finally:
        for m in hooked:
            m.remove_forward_hook()
    extra = getattr(model, "extra_flops", None)
    return int(total + (extra(input_shape) if extra else 0))
