"""Segmentation heads shared by several networks."""
from ..backend import jt
from .conv import ConvBNReLU

nn = jt.nn

__all__ = ["FCNHead"]


class FCNHead(nn.Sequential):
    """A 3x3 conv-BN-ReLU, channel dropout and a 1x1 conv to class logits.

    Args:
        in_channels: input width.
        channels: width of the 3x3 conv.
        num_classes: output channels (logits).
        dropout: probability of ``Dropout2d`` before the classifier.
    """

    def __init__(self, in_channels, channels, num_classes, dropout=0.1):
        super().__init__(ConvBNReLU(in_channels, channels), nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
