"""Segmentation networks in Jittor, registered by name.

>>> from model_zoo import create_model, list_models
>>> model = create_model("unet", in_channels=3, num_classes=2, base_channels=16)
"""
from .backend import jt  # noqa: F401  (configures Jittor before anything else imports it)
from .registry import (ModelZooError, UnknownModelError, create_model, list_models, model_arguments,
                       model_entrypoint, register_model, tiny_args)
from .base import InputSizeError, SegmentationModel
from .utils import count_flops, count_parameters

__all__ = ["create_model", "list_models", "model_arguments", "model_entrypoint", "register_model", "tiny_args",
           "ModelZooError", "UnknownModelError", "InputSizeError", "SegmentationModel", "count_parameters",
           "count_flops"]
