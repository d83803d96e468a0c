"""Attention with rotary positions and key padding masks; the single-stream ViT block and SD3's joint block.

`Attention` and `Block` are timm's (same parameter names: qkv, q_norm, k_norm, proj, norm1, norm2, mlp, so a
timm Block's state dict loads as is) plus two optional inputs: RoPE tables (djepa/models/rope.py) and a key
padding mask. `JointBlock` is the multimodal attention of SD3's MM-DiT (Esser et al. 2024) without its AdaLN
timestep modulation (D-JEPA's encoder has no timestep): the data tokens x and the text tokens c keep their own
weights, and one softmax runs over the keys of both.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from djepa.models.rope import apply_rope

QK_NORMS = ("none", "rms", "layer")
Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (N, hd) or (B, N, hd)


class Fp32RMSNorm(nn.Module):
    """RMS norm with a weight and no bias, computed in float32 under any autocast (the D-JEPA authors'
    qk-norm, models/block.py); the result is cast back to the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6, **_):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).to(x.dtype)


def qk_norm_layer(kind: str, head_dim: int) -> nn.Module:
    """Per-head norm of queries and keys: `rms` the authors' float32 RMS norm, `layer` what timm builds from
    D-JEPA's norm layer (LayerNorm, eps 1e-6), `none` MAR's."""
    if kind == "rms":
        return Fp32RMSNorm(head_dim)
    if kind == "layer":
        return nn.LayerNorm(head_dim, eps=1e-6)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.qk_norm must be one of {QK_NORMS}, got {kind!r}")


def attend(q, k, v, key_mask: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """q (B, H, Nq, hd), k and v (B, H, Nk, hd), key_mask (B, Nk) bool with True = a real key -> (B, H, Nq, hd)."""
    mask = None
    if key_mask is not None:
        # a sample without a single real key would take a softmax over nothing (NaN in every row); its rows are all
        # padding, so let them attend to every key instead: finite, and read by nobody
        key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)
        mask = key_mask[:, None, None, :]  # (B, 1, 1, Nk): the same keys for every head and query
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: str = "none",
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model.width ({dim}) must be divisible by model.num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = qk_norm_layer(qk_norm, self.head_dim)
        self.k_norm = qk_norm_layer(qk_norm, self.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def heads(self, x: torch.Tensor, rope: Rope | None = None):
        """x (B, N, D) -> q, k, v (B, H, N, hd); qk-norm first, then the rotation (as FLUX and SD3.5)."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def out(self, o: torch.Tensor) -> torch.Tensor:
        """Attention output (B, H, N, hd) -> (B, N, D): heads side by side, then the output projection."""
        b, h, n, hd = o.shape
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, n, h * hd)))

    def dropout_p(self) -> float:
        return self.attn_drop if self.training else 0.0

    def forward(self, x: torch.Tensor, rope: Rope | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D), rope tables for these N rows or None, mask (B, N) bool (True = real key) -> (B, N, D)."""
        q, k, v = self.heads(x, rope)
        return self.out(attend(q, k, v, mask, self.dropout_p()))


class Block(nn.Module):
    """Pre-norm transformer block (timm's Block without layer scale and drop path, which D-JEPA does not use)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_norm: str = "none", attn_drop: float = 0.0, proj_drop: float = 0.0, act_layer=nn.GELU):
        super().__init__()
        # nn.LayerNorm runs in float32 under autocast already (torch's autocast policy), as the authors force
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)

    def forward(self, x: torch.Tensor, rope: Rope | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope, mask)  # (B, N, D)
        return x + self.mlp(self.norm2(x))


def _all_real(mask: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    """A stream's key padding mask, or all True (B, N) for a stream given without one."""
    return mask if mask is not None else torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)


class JointBlock(nn.Module):
    """SD3's multimodal block without modulation: x (data, incl. class/buffer tokens) and c (text) each have
    their own norms, qkv, qk-norms, output projection and MLP (a `Block` per stream: x_stream, c_stream), and
    attention is ONE softmax over the keys of [c; x] for the queries of both. RoPE rotates x only; text tokens
    have no grid position (identity rotation). Padding keys of either stream are masked out, so an all-masked
    text stream gives exactly the output of a `Block` with x_stream's weights (the null text of CFG).

    context_pre_only (SD3's name): the last block of a stack, whose text output nobody reads, keeps only what
    the text keys and values need (norm1, qkv, qk-norms): no parameter is left without a gradient (DDP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_norm: str = "none", attn_drop: float = 0.0, proj_drop: float = 0.0, act_layer=nn.GELU,
                 context_pre_only: bool = False):
        super().__init__()
        args = (dim, num_heads, mlp_ratio, qkv_bias, qk_norm, attn_drop, proj_drop, act_layer)
        self.x_stream = Block(*args)
        self.c_stream = Block(*args)
        self.context_pre_only = context_pre_only
        if context_pre_only:
            self.c_stream.attn.proj = self.c_stream.norm2 = self.c_stream.mlp = nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: Rope | None = None,
                x_mask: torch.Tensor | None = None, c_mask: torch.Tensor | None = None):
        """x (B, Nx, D), c (B, Nc, D) (Nc may be 0), rope tables for x's rows or None, x_mask (B, Nx) and
        c_mask (B, Nc) bool with True = a real token, or None for all real -> x (B, Nx, D), c (B, Nc, D)
        (None with context_pre_only). Padding rows come out finite and meaningless."""
        xs, cs = self.x_stream, self.c_stream
        nc = c.shape[1]
        qx, kx, vx = xs.attn.heads(xs.norm1(x), rope)  # (B, H, Nx, hd)
        qc, kc, vc = cs.attn.heads(cs.norm1(c))  # (B, H, Nc, hd), no rotation
        mask = None
        if x_mask is not None or c_mask is not None:
            mask = torch.cat([_all_real(c_mask, c), _all_real(x_mask, x)], dim=1)  # (B, Nc + Nx)
        o = attend(torch.cat([qc, qx], 2), torch.cat([kc, kx], 2), torch.cat([vc, vx], 2), mask, xs.attn.dropout_p())
        x = x + xs.attn.out(o[:, :, nc:])
        x = x + xs.mlp(xs.norm2(x))
        if self.context_pre_only:
            return x, None
        c = c + cs.attn.out(o[:, :, :nc])
        return x, c + cs.mlp(cs.norm2(c))
