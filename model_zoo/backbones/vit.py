"""Vision Transformer encoders (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale", https://arxiv.org/abs/2010.11929) with timm's
parameter names.

Parameter names follow ``timm.models.vision_transformer.VisionTransformer`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.N.norm1``, ``blocks.N.attn.qkv``, ``blocks.N.attn.proj``,
``blocks.N.norm2``, ``blocks.N.mlp.fc1``, ``blocks.N.mlp.fc2``, ``norm``) so ImageNet weights map 1:1
(see ``model_zoo.backbones.pretrained``); there is no classifier ``head``.

The class token goes through every block, as in pretraining, and is dropped from the outputs.
Position embeddings are stored for the pretraining grid (``img_size / 16`` patches a side); an
input whose grid differs gets them resampled bilinearly (``align_corners=False``, as SETR's code),
the class token's embedding unchanged.
"""

from ..backend import jt
from ..registry import ModelZooError

nn = jt.nn

__all__ = ["Attention", "Mlp", "TransformerBlock", "VisionTransformer", "vit_base_patch16", "vit_large_patch16",
           "vit_light_patch16"]


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence (``N x L x C``).

    Args:
        dim: token width ``C`` (a multiple of ``num_heads``).
        num_heads: attention heads; each attends with width ``C / num_heads``.
    """

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ModelZooError(f"Attention: width {dim} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def execute(self, x):
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = nn.softmax(jt.matmul(q, k.permute(0, 1, 3, 2)) * self.scale, dim=-1)
        out = jt.matmul(attn, v).permute(0, 2, 1, 3).reshape(n, length, dim)
        return self.proj(out)

    @staticmethod
    def matmul_flops(length, dim):
        """FLOPs of ``q @ k^T`` and ``attn @ v`` for one sequence of ``length`` tokens of width ``dim``."""
        return 2 * 2 * length * length * dim


class Mlp(nn.Module):
    """Linear ``fc1`` to ``hidden`` units, GELU, linear ``fc2`` back to ``dim``."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def execute(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``dim`` (4 in ViT).
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def execute(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches linearly embedded by a strided conv (``proj``)."""

    def __init__(self, in_channels, dim, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def execute(self, x):
        return self.proj(x)


class VisionTransformer(nn.Module):
    """ViT feature extractor: patch embedding, class token, position embeddings, transformer blocks.

    Args:
        in_channels: image channels.
        embed_dim: token width (768 for ViT-B, 1024 for ViT-L).
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        patch_size: patch side (16); inputs must be multiples of it.
        img_size: the (square) image size the position embeddings are laid out for, i.e. the
            pretraining resolution (224 for timm's ``vit_base_patch16_224``, 384 for ``*_384``).
        out_indices: 0-based indices of the blocks whose outputs ``execute`` returns (default: the
            last block only). The last block must be among them (blocks after the deepest output
            would be unused).
        final_norm: apply the LayerNorm ``norm`` to the last block's output, as timm does before
            its classifier. SETR leaves it out (its heads normalise every map they take).

    ``execute(x)`` takes ``N x C x H x W`` with ``H`` and ``W`` multiples of ``patch_size`` and
    returns one ``N x embed_dim x H/16 x W/16`` map per entry of ``out_indices``, in that order
    (``channels`` and ``strides`` list their widths and strides).
    """

    def __init__(self, in_channels=3, embed_dim=768, depth=12, num_heads=12, patch_size=16, img_size=224,
                 out_indices=None, final_norm=True):
        super().__init__()
        out_indices = [depth - 1] if out_indices is None else sorted(out_indices)
        if not out_indices or out_indices[-1] != depth - 1 or out_indices[0] < 0 or len(set(out_indices)) < len(
                out_indices):
            raise ModelZooError(f"VisionTransformer: out_indices must be distinct block indices in 0..{depth - 1} "
                                f"that include the last block {depth - 1}, got {out_indices!r}")
        if img_size % patch_size:
            raise ModelZooError(f"VisionTransformer: img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.out_indices = out_indices
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        self.cls_token = jt.zeros((1, 1, embed_dim))
        self.pos_embed = jt.zeros((1, 1 + self.grid * self.grid, embed_dim))
        self.blocks = nn.ModuleList([TransformerBlock(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if final_norm else None
        self.channels = [embed_dim] * len(out_indices)
        self.strides = [patch_size] * len(out_indices)
        # timm's initialisation: truncated normal (std 0.02) for linear layers and position embeddings.
        jt.init.trunc_normal_(self.pos_embed, std=0.02)
        jt.init.gauss_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                jt.init.trunc_normal_(m.weight, std=0.02)
                jt.init.zero_(m.bias)

    def position_embeddings(self, h, w):
        """Position embeddings ``1 x (1 + h*w) x C`` for an ``h x w`` patch grid (resampled if needed)."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[2]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        patch_pos = nn.interpolate(patch_pos, size=(h, w), mode="bilinear", align_corners=False)
        return jt.concat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, dim)], dim=1)

    def execute(self, x):
        if x.shape[2] % self.patch_size or x.shape[3] % self.patch_size:
            raise ModelZooError(f"VisionTransformer: input {x.shape[2]}x{x.shape[3]} is not a multiple of the "
                                f"patch size {self.patch_size}")
        x = self.patch_embed(x)
        n, dim, h, w = x.shape
        tokens = x.reshape(n, dim, h * w).permute(0, 2, 1)
        tokens = jt.concat([self.cls_token.broadcast((n, 1, dim)), tokens], dim=1) + self.position_embeddings(h, w)
        features = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in self.out_indices:
                out = self.norm(tokens) if self.norm is not None and i == len(self.blocks) - 1 else tokens
                features.append(out[:, 1:].permute(0, 2, 1).reshape(n, dim, h, w))
        return features

    def attention_flops(self, h, w):
        """FLOPs of the attention matrix products for one ``h x w`` image (``h, w`` multiples of 16)."""
        length = 1 + (h // self.patch_size) * (w // self.patch_size)
        return len(self.blocks) * Attention.matmul_flops(length, self.channels[0])


def vit_base_patch16(in_channels=3, img_size=224, out_indices=None, final_norm=True):
    """ViT-B/16: width 768, 12 blocks of 12 heads; 85,798,656 parameters at ``img_size`` 224
    (timm's ``vit_base_patch16_224``: 86,567,656 less the 769,000 of ``head``)."""
    return VisionTransformer(in_channels, 768, 12, 12, 16, img_size, out_indices, final_norm)


def vit_large_patch16(in_channels=3, img_size=384, out_indices=None, final_norm=True):
    """ViT-L/16: width 1024, 24 blocks of 16 heads; 303,690,752 parameters at ``img_size`` 384
    (timm's ``vit_large_patch16_384``: 304,715,752 less the 1,025,000 of ``head``)."""
    return VisionTransformer(in_channels, 1024, 24, 16, 16, img_size, out_indices, final_norm)


def vit_light_patch16(in_channels=3, img_size=224, out_indices=None, final_norm=True):
    """Light ViT for CPU training: ViT-S/16's width (384, 6 heads) with 6 blocks instead of 12,
    11,018,880 parameters; its blocks load the first six of timm's ``vit_small_patch16_224``."""
    return VisionTransformer(in_channels, 384, 6, 6, 16, img_size, out_indices, final_norm)
