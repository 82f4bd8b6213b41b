"""SETR and its ViT encoder: layers taken, auxiliary outputs, attention, position embeddings, sizes."""
import numpy as np
import pytest

from model_zoo import ModelZooError, count_parameters, create_model
from model_zoo.backbones.pretrained import load_pretrained
from model_zoo.backbones.vit import Attention, VisionTransformer, vit_base_patch16, vit_light_patch16
from model_zoo.backend import jt
from model_zoo.setr import SETR, MLANeck
from test_pretrained import write_state

nn = jt.nn


def _input(shape, seed=0):
    return jt.array(np.random.RandomState(seed).randn(*shape).astype("float32"))


def _tiny(decoder, depth=4, aux_head=True):
    return SETR(3, 2, decoder, embed_dim=16, depth=depth, num_heads=2, img_size=64, decoder_channels=8,
                aux_head=aux_head)


@pytest.mark.parametrize("decoder,depth,mla,aux", [
    # ceil(depth * k / 24) for the paper's layers k: 6/12/18/24 (MLA), 10/15/20 (naive), 10/15/20/24 (PUP)
    ("mla", 24, [6, 12, 18, 24], []),
    ("naive", 24, [], [10, 15, 20]),
    ("pup", 24, [], [10, 15, 20, 24]),
    ("mla", 6, [2, 3, 5, 6], []),
    ("naive", 6, [], [3, 4, 5]),
    ("pup", 12, [], [5, 8, 10, 12]),
])
def test_layers_taken_from_the_encoder(decoder, depth, mla, aux):
    model = _tiny(decoder, depth)
    assert model.mla_layers == mla and model.aux_layers == aux
    assert model.encoder.out_indices == sorted({layer - 1 for layer in mla + aux + [depth]})


@pytest.mark.parametrize("decoder,num_aux", [("naive", 3), ("pup", 4), ("mla", 4)])
def test_auxiliary_outputs_in_training_only(decoder, num_aux):
    model = _tiny(decoder)
    x = _input((2, 3, 48, 64))
    model.train()
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) == 1 + num_aux
    assert all(list(o.shape) == [2, 2, 48, 64] for o in outputs)
    model.eval()
    assert list(model(x).shape) == [2, 2, 48, 64]
    plain = _tiny(decoder, aux_head=False)
    plain.train()
    assert not isinstance(plain(x), (list, tuple))
    assert len(plain.aux_heads) == 0


@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
def test_every_parameter_learns_with_auxiliary_heads(decoder):
    model = _tiny(decoder)
    model.train()
    outputs = model(_input((2, 3, 32, 32)))
    loss = sum((o * o).mean() for o in outputs)
    params = [p for p in model.parameters() if not p.name().endswith(("running_mean", "running_var"))]
    dead = [p.name() for p, g in zip(params, jt.grad(loss, params)) if not np.abs(g.numpy()).sum() > 0]
    assert not dead


def test_decoder_resolutions():
    # Before the final resize: naive classifies at stride 16, PUP at stride 2, MLA at stride 4.
    x = _input((1, 3, 64, 96))
    for decoder, stride in (("naive", 16), ("pup", 2), ("mla", 4)):
        model = _tiny(decoder, aux_head=False)
        model.eval()
        assert list(model.forward_logits(x).shape) == [1, 2, 64 // stride, 96 // stride], decoder


def test_attention_matches_numpy_formula():
    attn = Attention(8, num_heads=2)
    x = np.random.RandomState(1).randn(2, 5, 8).astype("float32")
    got = attn(jt.array(x)).numpy()
    w_qkv, b_qkv = attn.qkv.weight.numpy(), attn.qkv.bias.numpy()
    w_proj, b_proj = attn.proj.weight.numpy(), attn.proj.bias.numpy()
    q, k, v = np.split(x @ w_qkv.T + b_qkv, 3, axis=-1)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        scores = q[..., sl] @ k[..., sl].transpose(0, 2, 1) / np.sqrt(4)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        heads.append(weights @ v[..., sl])
    expected = np.concatenate(heads, axis=-1) @ w_proj.T + b_proj
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_position_embeddings_resampled_bilinearly():
    vit = VisionTransformer(in_channels=1, embed_dim=2, depth=1, num_heads=1, img_size=32)  # 2x2 grid
    pos = np.zeros((1, 5, 2), "float32")
    pos[0, 0] = [7, 7]  # class token
    pos[0, 1:, 0] = [0, 4, 0, 4]  # varies along the width only
    pos[0, 1:, 1] = [0, 0, 8, 8]  # varies along the height only
    vit.pos_embed.assign(jt.array(pos))
    np.testing.assert_array_equal(vit.position_embeddings(2, 2).numpy(), pos)
    out = vit.position_embeddings(4, 3).numpy()
    assert out.shape == (1, 13, 2)
    np.testing.assert_array_equal(out[0, 0], [7, 7])
    grid = out[0, 1:].reshape(4, 3, 2)
    # align_corners=False: output pixel i samples input (i + 0.5) * in / out - 0.5, clamped at the edges.
    np.testing.assert_allclose(grid[0, :, 0], [0, 2, 4], atol=1e-6)  # width 2 -> 3: -0.17->0, 0.5, 1.17->1
    np.testing.assert_allclose(grid[:, 0, 1], [0, 2, 6, 8], atol=1e-6)  # height 2 -> 4: 0, 0.25, 0.75, 1


def test_token_maps_keep_the_patch_layout():
    # With blocks reduced to identities (zero output projections), each output map is the patch
    # embedding plus the position embedding: checks the token <-> (row, column) reshaping.
    vit = VisionTransformer(in_channels=3, embed_dim=8, depth=2, num_heads=2, img_size=32, out_indices=[0, 1],
                            final_norm=False)
    for block in vit.blocks:
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.assign(jt.zeros(layer.weight.shape))
            layer.bias.assign(jt.zeros(layer.bias.shape))
    vit.eval()
    x = _input((1, 3, 32, 48))
    features = vit(x)
    patches = vit.patch_embed(x).numpy()
    pos = vit.position_embeddings(2, 3).numpy()[0, 1:].T.reshape(1, 8, 2, 3)
    assert [list(f.shape) for f in features] == [[1, 8, 2, 3]] * 2
    for f in features:
        np.testing.assert_allclose(f.numpy(), patches + pos, rtol=1e-5, atol=1e-5)


def test_vit_rejects_bad_arguments():
    with pytest.raises(ModelZooError, match="include the last block 3"):
        VisionTransformer(depth=4, out_indices=[1, 2])
    with pytest.raises(ModelZooError, match="not a multiple of num_heads"):
        VisionTransformer(embed_dim=10, num_heads=3, depth=1)
    vit = VisionTransformer(embed_dim=8, depth=1, num_heads=2, img_size=32)
    with pytest.raises(ModelZooError, match="not a multiple of the patch size 16"):
        vit(_input((1, 3, 40, 32)))
    with pytest.raises(ModelZooError, match="decoder must be one of naive, pup, mla"):
        SETR(decoder="fpn")


def test_mla_neck_sums_top_down():
    neck = MLANeck(4, 4)
    identity = nn.ModuleList([nn.Identity() for _ in range(4)])
    neck.norms, neck.reduce, neck.fuse = identity, identity, identity
    levels = neck([jt.full((1, 4, 2, 2), value) for value in (1.0, 10.0, 100.0, 1000.0)])
    assert [float(level.numpy()[0, 0, 0, 0]) for level in levels] == [1111.0, 1110.0, 1100.0, 1000.0]


def test_attention_flops():
    model = _tiny("naive")
    # 4 blocks x (q k^T + attn v) = 4 x 2 x 2 x L^2 x C with L = 1 + patches, C = 16.
    assert model.extra_flops((1, 3, 64, 64)) == 4 * 4 * 17 ** 2 * 16
    assert model.extra_flops((2, 3, 72, 88)) == 2 * 4 * 4 * 31 ** 2 * 16  # padded to 80x96: 5x6 patches


def test_encoder_loads_timm_vit_weights(tmp_path):
    # A timm ViT checkpoint (with its final norm and head) loads into SETR's encoder with norm.* ignored.
    timm_like = VisionTransformer(in_channels=3, embed_dim=16, depth=4, num_heads=2, img_size=64)
    state = {k: v.numpy() for k, v in timm_like.state_dict().items()}
    state["head.weight"], state["head.bias"] = np.zeros((10, 16), "float32"), np.zeros(10, "float32")
    path = write_state(tmp_path / "vit.pth", state)
    model = _tiny("pup")
    with pytest.raises(ModelZooError, match="unexpected: norm.bias, norm.weight"):
        load_pretrained(model.get_encoder(), path)
    skipped = load_pretrained(model.get_encoder(), path, ignore=("norm.*",))
    assert skipped == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    np.testing.assert_array_equal(model.encoder.blocks[3].attn.qkv.weight.numpy(), state["blocks.3.attn.qkv.weight"])


def test_vit_parameter_counts():
    # timm's totals less the classifier head (embed_dim * 1000 + 1000).
    assert count_parameters(vit_base_patch16()) == 86_567_656 - 769_000
    assert count_parameters(vit_light_patch16()) == 11_018_880


@pytest.mark.parametrize("name,params", [
    ("setr_naive_light", 11_219_848),
    ("setr_pup_light", 13_679_498),
    ("setr_mla_light", 12_258_690),
])
def test_light_parameter_counts(name, params):
    assert count_parameters(create_model(name)) == params
