"""EVA02 tower: geometry of B-16 / L-14, RoPE tables by hand, pre-norm tap, patch dropout, timm parity."""

from __future__ import annotations

import math

import pytest
import torch

from flagembed.models.vision import EVA02_B16, EVA02_L14, EvaConfig, EvaVisionTower, infer_config, rope_tables
from flagembed.models.vision.eva import reference_rope_keys


def tiny(patch: int = 16, image: int = 224, depth: int = 1, **kw) -> EvaConfig:
    geometry = dict(image_size=image, patch_size=patch, depth=depth)
    return EvaConfig(width=32, heads=2, mlp_hidden=85, embed_dim=24, **geometry, **kw)


@pytest.mark.parametrize(("patch", "tokens"), [(16, 197), (14, 257)])
def test_token_count_for_b16_and_l14_geometry(patch, tokens):
    tower = EvaVisionTower(tiny(patch)).init_random(seed=0).eval()
    out = tower(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, tokens, 32)


@pytest.mark.parametrize(("cfg", "params", "keys"), [(EVA02_B16, 86.3e6, 286), (EVA02_L14, 304.1e6, 562)])
def test_full_size_parameter_and_key_counts(cfg, params, keys):
    with torch.device("meta"):
        tower = EvaVisionTower(cfg)
    n = sum(p.numel() for p in tower.parameters())
    assert abs(n - params) < 0.06e6  # published: 86.3 M / 304.1 M including the unused norm and head
    assert len(tower.state_dict()) + len(reference_rope_keys(cfg)) == keys
    assert infer_config(tower.state_dict(), patch_dropout=cfg.patch_dropout) == cfg  # no RoPE table: head size 64


def test_rope_table_by_hand():
    grid, head_dim = 14, 64
    cos, sin = rope_tables(grid, head_dim, 16)
    assert cos.shape == (grid * grid, head_dim)
    for patch in (0, 15, 100, 195):
        r, c = divmod(patch, grid)
        for j in (0, 1, 7, 31, 32, 33, 50, 63):
            axis, i = (r, j) if j < 32 else (c, j - 32)
            freq = 1.0 / 10000 ** (2 * (i // 2) / 32)
            angle = axis / grid * 16 * freq
            assert math.isclose(float(cos[patch, j]), math.cos(angle), abs_tol=1e-5)
            assert math.isclose(float(sin[patch, j]), math.sin(angle), abs_tol=1e-5)


def _eager_reference(tower: EvaVisionTower, x: torch.Tensor) -> torch.Tensor:
    """The tower written out with explicit loops and an eager softmax attention."""
    cfg = tower.config
    h = tower.patch_embed.proj(x).flatten(2).transpose(1, 2)
    h = torch.cat([tower.cls_token.expand(len(x), -1, -1), h], 1) + tower.pos_embed
    cos, sin = rope_tables(cfg.grid, cfg.head_dim, cfg.pt_hw_seq_len)

    def rope(t):  # t [B, heads, N, D]
        rot = torch.empty_like(t)
        rot[..., 0::2], rot[..., 1::2] = -t[..., 1::2], t[..., 0::2]
        return t * cos + rot * sin

    for blk in tower.blocks:
        a = blk.attn
        y = torch.nn.functional.layer_norm(h, (cfg.width,), blk.norm1.weight, blk.norm1.bias, 1e-6)
        q = (y @ a.q_proj.weight.T + a.q_bias).view(len(x), -1, cfg.heads, cfg.head_dim).transpose(1, 2)
        k = (y @ a.k_proj.weight.T).view(len(x), -1, cfg.heads, cfg.head_dim).transpose(1, 2)
        v = (y @ a.v_proj.weight.T + a.v_bias).view(len(x), -1, cfg.heads, cfg.head_dim).transpose(1, 2)
        q = torch.cat([q[:, :, :1], rope(q[:, :, 1:])], 2)
        k = torch.cat([k[:, :, :1], rope(k[:, :, 1:])], 2)
        att = torch.softmax(q * cfg.head_dim**-0.5 @ k.transpose(-1, -2), -1) @ v
        att = a.inner_attn_ln(att.transpose(1, 2).reshape(len(x), -1, cfg.width))
        h = h + a.proj(att)
        y = blk.norm2(h)
        h = h + blk.mlp.w3(blk.mlp.ffn_ln(torch.nn.functional.silu(blk.mlp.w1(y)) * blk.mlp.w2(y)))
    return h


def test_forward_equals_eager_reference_and_skips_final_norm():
    tower = EvaVisionTower(tiny(16, 64, depth=2)).init_random(seed=1).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = tower(x)
        torch.testing.assert_close(out, _eager_reference(tower, x), atol=1e-5, rtol=1e-5)
        tower.norm.weight.mul_(3.0)
        tower.head.weight.add_(1.0)
        assert torch.equal(tower(x), out)  # tokens are taken before the final norm; the head is unused


def test_patch_dropout_in_training_only():
    tower = EvaVisionTower(tiny(16, 64, patch_dropout=0.5)).init_random(seed=2)
    x = torch.randn(3, 3, 64, 64)
    assert tower.train()(x).shape == (3, 1 + 8, 32)  # 16 patches, keep int(16 * 0.5)
    assert tower.eval()(x).shape == (3, 17, 32)


def test_timm_parity():
    timm = pytest.importorskip("timm", exc_type=ImportError)
    cfg = tiny(16, 64, depth=2)
    ours = EvaVisionTower(cfg).init_random(seed=3).eval()
    ref = timm.create_model(
        "eva02_base_patch16_clip_224", pretrained=False, img_size=64, embed_dim=32, depth=2, num_heads=2,
        num_classes=24,
    ).eval()  # fmt: skip
    rename = {"mlp.ffn_ln": "mlp.norm", "attn.inner_attn_ln": "attn.norm", "mlp.w1": "mlp.fc1_g"}
    rename.update({"mlp.w2": "mlp.fc1_x", "mlp.w3": "mlp.fc2", "attn.q_bias": "attn.q_proj.bias"})
    rename["attn.v_bias"] = "attn.v_proj.bias"
    sd = {}
    for k, v in ours.state_dict().items():
        for a, b in rename.items():
            k = k.replace(a, b)
        sd[k] = v
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not unexpected and all("rope" in m for m in missing)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        theirs = ref.forward_intermediates(x, indices=1, norm=False, output_fmt="NLC", intermediates_only=True)[0]
        torch.testing.assert_close(ours(x)[:, 1:], theirs, atol=1e-5, rtol=1e-5)
