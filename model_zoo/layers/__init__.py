"""Building blocks shared by the model families (one module per kind of block).

A block used by more than one model file lives here; blocks specific to one network stay in that
network's file.
"""
from .aspp import ASPP, ASPPPooling
from .attention_gate import AttentionGate
from .channel_attention import ChannelAttention
from .conv import ConvBNReLU, DoubleConv, PooledEncoder, UNetEncoder, UpConcat
from .dense import DenseBlock, DenseLayer, Transition
from .external_attention import ExternalAttention
from .heads import FCNHead
from .linknet import LinkNetDecoder, LinkNetDecoderBlock, LinkNetHead
from .object_context import OCRBlock, ObjectRegionGather, PixelRegionAttention
from .pyramid_pooling import PyramidPooling, adaptive_avg_pool2d
from .recurrent import RecurrentConv, RecurrentResidualBlock
from .squeeze_excite import ChannelSE, SpatialChannelSE, SpatialSE, SqueezeExcite

__all__ = ["ASPP", "ASPPPooling", "AttentionGate", "ChannelAttention", "ConvBNReLU", "DoubleConv", "PooledEncoder",
           "UNetEncoder", "UpConcat", "DenseBlock", "DenseLayer", "Transition", "ExternalAttention", "FCNHead",
           "LinkNetDecoder", "LinkNetDecoderBlock", "LinkNetHead", "OCRBlock", "ObjectRegionGather",
           "PixelRegionAttention", "PyramidPooling", "adaptive_avg_pool2d", "RecurrentConv", "RecurrentResidualBlock",
           "ChannelSE", "SpatialChannelSE", "SpatialSE", "SqueezeExcite"]
