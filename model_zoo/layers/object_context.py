"""Object-contextual representations (OCR): Yuan, Chen and Wang, 2020, "Object-Contextual
Representations for Semantic Segmentation", ECCV 2020, https://arxiv.org/abs/1909.11065.

Given pixel features ``x`` (``N x C x H x W``) and coarse segmentation logits ``l``
(``N x K x H x W``, one soft object region per class):

1. object region representations ``f_k = sum_i softmax_i(l_ki) x_i`` (``ObjectRegionGather``:
   a spatial softmax, so each region is a weighted average of pixel features);
2. pixel-region relation ``w_ik = softmax_k(phi(x_i) . psi(f_k) / sqrt(D))`` and object-contextual
   representation ``y_i = rho(sum_k w_ik delta(f_k))`` (``PixelRegionAttention``; phi, psi: two 1x1
   conv-BN-ReLU to ``D`` key channels, delta: one, rho: one back to ``C``);
3. augmented representation ``g([y_i, x_i])``: concatenation, 1x1 conv-BN-ReLU, channel dropout
   (``OCRBlock``).

The layer names (``f_pixel``, ``f_object``, ``f_down``, ``f_up``) are the ones of the authors' code.
"""
from ..backend import jt
from .conv import ConvBNReLU

nn = jt.nn

__all__ = ["ObjectRegionGather", "PixelRegionAttention", "OCRBlock"]


class ObjectRegionGather(nn.Module):
    """Object region representations: per region, the average of the pixel features weighted by
    the spatial softmax of that region's logits.

    ``execute(features, region_logits)``: ``N x C x H x W`` and ``N x K x H x W`` (same ``H x W``)
    give ``N x C x K x 1`` (regions laid out as a ``K x 1`` map, so 1x1 convs can transform them).
    """

    def execute(self, features, region_logits):
        n, c, h, w = features.shape
        k = region_logits.shape[1]
        weights = nn.softmax(region_logits.reshape(n, k, h * w), dim=2)           # each region sums to 1 over pixels
        regions = nn.bmm(weights, features.reshape(n, c, h * w).transpose(0, 2, 1))  # N x K x C
        return regions.transpose(0, 2, 1).reshape(n, c, k, 1)

    @staticmethod
    def matmul_flops(channels, pixels, num_regions):
        """FLOPs (2 x multiply-adds) of the weighted sum for one image."""
        return 2 * num_regions * pixels * channels


class PixelRegionAttention(nn.Module):
    """Pixel-region relation and the object-contextual representation of every pixel.

    Args:
        in_channels: width ``C`` of the pixel features and of the region representations.
        key_channels: width ``D`` of queries, keys and values.

    ``execute(features, regions)``: ``N x C x H x W`` pixels and ``N x C x K x 1`` regions give the
    context ``N x C x H x W``. Each pixel's weights over the ``K`` regions are a softmax of the
    query-key products scaled by ``1 / sqrt(D)``. With a single region (``K = 1``) every weight is
    1, so ``f_pixel`` and ``f_object`` receive no gradient.
    """

    def __init__(self, in_channels, key_channels):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = self._two_layer_transform(in_channels, key_channels)
        self.f_object = self._two_layer_transform(in_channels, key_channels)
        self.f_down = ConvBNReLU(in_channels, key_channels, 1)
        self.f_up = ConvBNReLU(key_channels, in_channels, 1)

    @staticmethod
    def _two_layer_transform(in_channels, out_channels):
        return nn.Sequential(ConvBNReLU(in_channels, out_channels, 1), ConvBNReLU(out_channels, out_channels, 1))

    def execute(self, features, regions):
        n, _, h, w = features.shape
        k, d = regions.shape[2], self.key_channels
        query = self.f_pixel(features).reshape(n, d, h * w).transpose(0, 2, 1)     # N x HW x D
        key = self.f_object(regions).reshape(n, d, k)                              # N x D x K
        value = self.f_down(regions).reshape(n, d, k).transpose(0, 2, 1)           # N x K x D
        relation = nn.softmax(nn.bmm(query, key) * d ** -0.5, dim=2)               # each pixel sums to 1 over regions
        context = nn.bmm(relation, value).transpose(0, 2, 1).reshape(n, d, h, w)
        return self.f_up(context)

    def matmul_flops(self, pixels, num_regions):
        """FLOPs (2 x multiply-adds) of the relation and context products for one image."""
        return 2 * 2 * pixels * num_regions * self.key_channels


class OCRBlock(nn.Module):
    """The OCR module: region representations, pixel-region attention, then the augmented
    representation ``conv1x1-BN-ReLU([context, features])`` with channel dropout.

    Args:
        in_channels: width of the pixel features.
        key_channels: width of the attention's queries, keys and values (paper: 256).
        out_channels: output width (paper: 512, equal to ``in_channels``).
        dropout: channel (2D) dropout rate after the fusion (authors' code: 0.05).

    ``execute(features, region_logits)``: pixel features ``N x in_channels x H x W`` and soft
    object region logits ``N x K x H x W`` (any ``K >= 1``) give ``N x out_channels x H x W``.
    """

    def __init__(self, in_channels, key_channels, out_channels, dropout=0.05):
        super().__init__()
        self.in_channels = in_channels
        self.gather = ObjectRegionGather()
        self.attention = PixelRegionAttention(in_channels, key_channels)
        self.fuse = nn.Sequential(ConvBNReLU(2 * in_channels, out_channels, 1), nn.Dropout2d(dropout))

    def execute(self, features, region_logits):
        regions = self.gather(features, region_logits)
        context = self.attention(features, regions)
        return self.fuse(jt.concat([context, features], dim=1))

    def matmul_flops(self, pixels, num_regions):
        """FLOPs (2 x multiply-adds) of the block's matrix products for one image of ``pixels`` positions."""
        return (ObjectRegionGather.matmul_flops(self.in_channels, pixels, num_regions)
                + self.attention.matmul_flops(pixels, num_regions))
