"""EVA02-CLIP vision tower (vision part only), written from the published math; no timm/torchvision needed.

Pre-norm ViT blocks with separate q/k/v projections (learned q and v biases, no k bias), 2-D rotary
position embedding on every patch token (not CLS), an inner LayerNorm before the attention output
projection ("sub-LN") and a SwiGLU MLP with its own LayerNorm. Parameter names follow the released
EVA-CLIP checkpoints, so a Visualized-BGE ``model_visual.visual.*`` state dict loads as it is.
``forward`` returns the last block's tokens **before** the final norm, which is what Visualized-BGE uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6


@dataclass(frozen=True)
class EvaConfig:
    """Geometry of an EVA02 tower. ``patch_dropout`` acts in training only."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_hidden: int = 2048  # int(width * 2.6667)
    embed_dim: int = 512  # CLIP head output (kept for the weight layout; unused)
    pt_hw_seq_len: int = 16  # RoPE grid of pre-training; smaller grids are interpolated onto it
    patch_dropout: float = 0.0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaConfig:
        """Build from a dict, rejecting unknown keys (a typo must not silently become a default)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise ValueError(f"unknown EVA config keys {extra}; valid: {sorted(known)}")
        return cls(**data)

    def check(self) -> EvaConfig:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads or self.head_dim % 4:
            raise ValueError(f"width {self.width} / heads {self.heads} must give a head size divisible by 4")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1), got {self.patch_dropout}")
        return self


EVA02_B16 = EvaConfig(patch_size=16, width=768, depth=12, heads=12, mlp_hidden=2048, embed_dim=512, patch_dropout=0.5)
EVA02_L14 = EvaConfig(patch_size=14, width=1024, depth=24, heads=16, mlp_hidden=2730, embed_dim=768)


def rope_tables(grid: int, head_dim: int, pt_seq_len: int = 16, theta: float = 10000.0) -> tuple[torch.Tensor, ...]:
    """``(cos, sin)`` of shape ``[grid², head_dim]``: [row dims | column dims], each frequency used twice."""
    half = head_dim // 2  # rotary dims per axis
    freqs = 1.0 / (theta ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    t = torch.arange(grid).float() / grid * pt_seq_len
    per_axis = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # [G, half]
    rows = per_axis[:, None, :].expand(grid, grid, half)
    cols = per_axis[None, :, :].expand(grid, grid, half)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """``[x0, x1, x2, x3, …] → [−x1, x0, −x3, x2, …]``."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class EvaAttention(nn.Module):
    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.scale = cfg.head_dim**-0.5
        self.q_proj = nn.Linear(w, w, bias=False)
        self.k_proj = nn.Linear(w, w, bias=False)
        self.v_proj = nn.Linear(w, w, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(w))
        self.v_bias = nn.Parameter(torch.zeros(w))
        self.inner_attn_ln = nn.LayerNorm(w, eps=LN_EPS)
        self.proj = nn.Linear(w, w)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q = F.linear(x, self.q_proj.weight, self.q_bias).view(b, n, self.heads, -1).transpose(1, 2)
        k = F.linear(x, self.k_proj.weight).view(b, n, self.heads, -1).transpose(1, 2)
        v = F.linear(x, self.v_proj.weight, self.v_bias).view(b, n, self.heads, -1).transpose(1, 2)
        q = torch.cat([q[:, :, :1], q[:, :, 1:] * cos + rotate_pairs(q[:, :, 1:]) * sin], dim=2).type_as(v)
        k = torch.cat([k[:, :, :1], k[:, :, 1:] * cos + rotate_pairs(k[:, :, 1:]) * sin], dim=2).type_as(v)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(self.inner_attn_ln(out.transpose(1, 2).reshape(b, n, w)))


class SwiGLU(nn.Module):
    """``w3(LN(SiLU(w1 x) * w2 x))``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(width, hidden)
        self.w2 = nn.Linear(width, hidden)
        self.ffn_ln = nn.LayerNorm(hidden, eps=LN_EPS)
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class EvaBlock(nn.Module):
    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.attn = EvaAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.mlp = SwiGLU(cfg.width, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EvaVisionTower(nn.Module):
    """EVA02 vision transformer; ``forward(pixels)`` → ``[B, 1 + kept patches, W]`` (CLS first, no final norm)."""

    def __init__(self, cfg: EvaConfig) -> None:
        super().__init__()
        self.config = cfg.check()
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))
        self.blocks = nn.ModuleList(EvaBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=LN_EPS)  # in the weight file; not applied (tokens taken before it)
        self.head = nn.Linear(cfg.width, cfg.embed_dim)  # CLIP projection; in the weight file, unused
        cos, sin = rope_tables(cfg.grid, cfg.head_dim, cfg.pt_hw_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.gradient_checkpointing = False

    def init_random(self, std: float = 0.02, seed: int | None = None) -> EvaVisionTower:
        """Random weights (for tests and from-scratch training): normal linear/conv weights, unit norms."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("weight") and p.dim() == 1:  # LayerNorm
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(std * torch.randn(p.shape, generator=gen) * (5.0 if p.dim() == 3 else 1.0))
        return self

    def patch_dropout(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training only: keep ``max(1, int(N * (1 - p)))`` random patches per image (CLS always kept)."""
        p = self.config.patch_dropout
        if not self.training or p <= 0.0:
            return x, None
        b, n = x.shape[0], x.shape[1] - 1
        keep = max(1, int(n * (1.0 - p)))
        idx = torch.randn(b, n, device=x.device).topk(keep, dim=-1).indices
        patches = x[torch.arange(b, device=x.device)[:, None], idx + 1]
        return torch.cat([x[:, :1], patches], dim=1), idx

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels.to(self.pos_embed.dtype))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x, kept = self.patch_dropout(x)
        cos, sin = self.rope_cos.to(x.dtype), self.rope_sin.to(x.dtype)
        if kept is not None:  # [B, 1, kept, D]: the rotary angles of the kept patches, shared by the heads
            cos, sin = cos[kept][:, None], sin[kept][:, None]
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin)
        return x


def reference_rope_keys(cfg: EvaConfig) -> list[str]:
    """The rotary buffers the released weight files also store (recomputed here, so dropped on load)."""
    names = ["rope.freqs_cos", "rope.freqs_sin"]
    return names + [f"blocks.{i}.attn.{n}" for i in range(cfg.depth) for n in names]


def infer_config(state: dict[str, torch.Tensor], prefix: str = "", patch_dropout: float = 0.0) -> EvaConfig:
    """Read the tower geometry off a state dict (head size from the stored RoPE table, else 64)."""
    cls = state[f"{prefix}cls_token"]
    width = int(cls.shape[-1])
    patch = int(state[f"{prefix}patch_embed.proj.weight"].shape[-1])
    grid = int(round((state[f"{prefix}pos_embed"].shape[1] - 1) ** 0.5))
    depth = 1 + max(int(k[len(prefix) :].split(".")[1]) for k in state if k.startswith(f"{prefix}blocks."))
    rope = state.get(f"{prefix}rope.freqs_cos")
    head_dim = int(rope.shape[-1]) if rope is not None else 64
    return EvaConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        depth=depth,
        heads=width // head_dim,
        mlp_hidden=int(state[f"{prefix}blocks.0.mlp.w1.weight"].shape[0]),
        embed_dim=int(state[f"{prefix}head.weight"].shape[0]),
        patch_dropout=patch_dropout,
    ).check()
