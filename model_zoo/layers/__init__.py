"""Building blocks shared by the model families (one module per kind of block).

A block used by more than one model file lives here; blocks specific to one network stay in that
network's file.
"""
from .conv import ConvBNReLU, DoubleConv, PooledEncoder, UNetEncoder, UpConcat
from .attention_gate import AttentionGate
from .dense import DenseBlock, DenseLayer, Transition
from .recurrent import RecurrentConv, RecurrentResidualBlock
from .squeeze_excite import ChannelSE, SpatialChannelSE, SpatialSE, SqueezeExcite
from .linknet import LinkNetDecoder, LinkNetDecoderBlock, LinkNetHead
from .aspp import ASPP, ASPPPooling
from .pyramid_pooling import PyramidPooling, adaptive_avg_pool2d
from .object_context import OCRBlock, ObjectRegionGather, PixelRegionAttention
from .external_attention import ExternalAttention

__all__ = ["ConvBNReLU", "DoubleConv", "PooledEncoder", "UNetEncoder", "UpConcat", "SqueezeExcite", "ChannelSE", "SpatialSE", "SpatialChannelSE",
           "AttentionGate", "DenseLayer", "DenseBlock", "Transition", "RecurrentConv", "RecurrentResidualBlock",
           "LinkNetDecoderBlock", "LinkNetDecoder", "LinkNetHead"]
__all__ += ["ASPP", "ASPPPooling", "PyramidPooling", "adaptive_avg_pool2d"]
__all__ += ["ObjectRegionGather", "PixelRegionAttention", "OCRBlock"]
__all__ += ["ExternalAttention"]
