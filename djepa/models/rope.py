"""Axial rotary position embeddings (RoPE) for token grids of rank 1, 2 or 3.

RoPE rotates each query and key by an angle proportional to its position, so the score q(p) . k(p') depends on
p - p' only: the attention sees relative positions, and a table for a longer grid extends the shorter one row for
row (variable lengths need no retraining and no interpolation, unlike a learned absolute table).

Convention: rotate-half, as HF LLaMA / Qwen2 (`rotate_half`): dim i pairs with dim i + hd/2, and
    rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1],
with cos = [cos(a), cos(a)] and sin = [sin(a), sin(a)] for the hd/2 pair angles a. Axial: the hd/2 pairs are cut
into one equal share per grid axis, in the axis order (t, h, w) / (h, w) / (l) (the same sections of the half dim
as Qwen2-VL's M-RoPE), and the pairs of an axis turn with that axis' coordinate only, at the usual frequencies
theta^(-2i / d_axis), i < d_axis / 2, d_axis = 2 * pairs per axis. The hd/2 mod rank pairs left over sit at the end
and are not rotated (angle 0: cos 1, sin 0).

Rows follow patchify's raster order (djepa/models/tokenizer.py): token (t, h, w) is row (t * H + h) * W + w.
Tokens with no grid position (class/buffer tokens, text tokens) get the identity rotation, as FLUX gives text
tokens position 0.
"""
from __future__ import annotations

import torch


def rope_tables(grid_shape: tuple[int, ...], head_dim: int,
                theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin, each float32 (N, head_dim) with N = prod(grid_shape), rows in patchify's raster order."""
    rank = len(grid_shape)
    if rank not in (1, 2, 3):
        raise ValueError(f"RoPE needs a token grid of rank 1, 2 or 3, got {tuple(grid_shape)}")
    pairs = head_dim // 2 // rank  # rotated pairs per axis
    if head_dim % 2 or pairs < 1:
        raise ValueError(
            f"axial RoPE on a rank-{rank} grid needs an even head dim of at least {2 * rank}, got {head_dim}: "
            f"choose model.width and model.num_heads so that model.width / model.num_heads is such a number"
        )
    # positions of every token, (N, rank), in raster order: meshgrid 'ij' then flatten = (t h w) in einops
    coords = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid_shape), indexing="ij")
    pos = torch.stack([c.reshape(-1) for c in coords], dim=-1)  # (N, rank)
    freqs = theta ** (-torch.arange(pairs, dtype=torch.float64) * 2 / (2 * pairs))  # (pairs,)
    angles = (pos[:, :, None] * freqs).reshape(pos.shape[0], rank * pairs)  # (N, rank * pairs), axis-major
    rest = head_dim // 2 - rank * pairs  # unrotated pairs: angle 0
    angles = torch.cat([angles, angles.new_zeros(pos.shape[0], rest)], dim=-1)  # (N, hd / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (N, hd): dim i and i + hd/2 share an angle
    # float64 angles, then float32: positions up to thousands keep ~1e-7 relative accuracy
    return angles.cos().float(), angles.sin().float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim (HF LLaMA's rotate_half)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, hd); cos, sin (N, hd) or (B, N, hd) -> rotated x, in float32, cast back to x's dtype."""
    if cos.dim() == 3:  # per-sample rows (gathered positions): broadcast over heads
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, N, hd)
    xf = x.float()
    return (xf * cos.float() + rotate_half(xf) * sin.float()).to(x.dtype)


def rope_for_sequence(cos: torch.Tensor, sin: torch.Tensor, idx: torch.Tensor, num_prefix: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for a sequence [num_prefix tokens without a position ; grid tokens idx (B, K)].
    cos, sin (N, hd) tables of the full grid -> cos, sin (B, num_prefix + K, hd); the prefix rows are the
    identity rotation (cos 1, sin 0), so buffer/class tokens see only content, never position."""
    b, hd = idx.shape[0], cos.shape[-1]
    cos_k, sin_k = cos[idx], sin[idx]  # (B, K, hd): table rows by token index
    one = cos.new_ones(b, num_prefix, hd)
    zero = sin.new_zeros(b, num_prefix, hd)
    return torch.cat([one, cos_k], dim=1), torch.cat([zero, sin_k], dim=1)

