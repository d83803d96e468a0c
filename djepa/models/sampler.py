"""Algorithm 1: generalized next set-of-tokens prediction.

T auto-regressive steps on a cosine schedule in a random order per sample; each
step encodes the known tokens, predicts z for all unknown ones and denoises the
next set with the token loss's sampler. T = N is next-token prediction, T = 1 is
one-shot. Tokens given up front (a keep-mask) make the same loop in- or outpaint.

The loop never waits for the device: its schedule, slices and guidance scales are host-side
integers and floats, and only an inpainting call reads the keep-mask back (once). Precision and
speed are the caller's (torch.autocast around the call; djepa.fast wraps the token sampler).
"""
from __future__ import annotations

import math

import torch

from djepa.models.djepa import DJEPA, gather_tokens
from djepa.models.rng import RowGenerator, rand


def ar_schedule(n: int, steps: int) -> list[int]:
    """Tokens to generate at each step: masked fraction cos(pi/2 * (s+1)/T) after step s (MaskGIT/MAR),
    at least one token per step and one left for later, all the rest at the last step. Sums to n."""
    if not 1 <= steps <= max(n, 1):
        raise ValueError(f"ar_steps must be in 1..{n} for {n} tokens, got {steps}")
    counts, remaining = [], n
    for s in range(steps):
        if s == steps - 1:
            counts.append(remaining)
            break
        left = max(1, min(remaining - 1, math.floor(n * math.cos(math.pi / 2 * (s + 1) / steps))))
        counts.append(remaining - left)
        remaining = left
    return counts


def cfg_at(cfg: float, schedule: str, known_after: int, n: int) -> float:
    """Guidance scale for a step: linear in the fraction of tokens known after it (Muse), or constant.
    mar_linear is MAR's sample_tokens: it counts the next step's masked tokens clamped to at least 1, so
    the last step uses 1 + (cfg - 1)(N - 1)/N, never cfg; computed in float32 as MAR's tensors are."""
    if schedule == "constant":
        return cfg
    if schedule == "mar_linear":
        masked = torch.tensor(float(max(1, n - known_after)), dtype=torch.float32)
        return float(1 + (cfg - 1) * (n - masked) / n)
    return 1.0 + (cfg - 1.0) * known_after / n


@torch.no_grad()
def generate(
    model: DJEPA,
    cond,
    ar_steps: int = 64,
    cfg: float = 1.0,
    cfg_schedule: str = "linear",
    temperature: float = 1.0,
    generator: torch.Generator | RowGenerator | None = None,
    tokens: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    force_guidance: bool = False,
) -> torch.Tensor:
    """cond: class labels (B,) or a text dict (DJEPA.condition) -> tokens (B, N, C). With `tokens` and `keep` (B, N)
    bool, kept tokens are given
    (inpainting / outpainting) and returned bit-exactly; every row must keep the same number.
    The batch is doubled (conditional + null class) only when cfg != 1 or `force_guidance`.
    A RowGenerator (one seed per sample) makes each sample independent of its batch."""
    model.eval()
    (b, device), n, c = model.batch_of(cond), model.num_tokens, model.token_dim
    tokens, keep, known = _given(tokens, keep, (b, n, c), device)
    if known == n:
        return tokens
    # random order: given tokens first (already "generated"), then a random order of the rest
    keys = rand((b, n), generator, device)
    orders = (keys if keep is None else keys.masked_fill(keep, -1.0)).argsort(dim=1)
    guided = force_guidance or cfg != 1.0
    cnd = model.condition(cond)
    if guided:  # rows [cond; uncond]: the null class or the empty text, for classifier-free guidance
        cnd = model.guided(cnd)
    for count in ar_schedule(n - known, min(ar_steps, n - known)):
        keep_idx, next_idx = orders[:, :known], orders[:, known : known + count]
        src, idx = (torch.cat([tokens, tokens]), torch.cat([keep_idx, keep_idx])) if guided else (tokens, keep_idx)
        z = model.predict(model.encode(src, idx, cnd), idx, cnd).float()  # (B or 2B, N, D)
        z_next = gather_tokens(z, torch.cat([next_idx, next_idx]) if guided else next_idx)
        scale = cfg_at(cfg, cfg_schedule, known + count, n)
        x = model.token_loss.sample(z_next.reshape(-1, z.shape[-1]), temperature, scale, guided, generator)
        tokens.scatter_(1, next_idx.unsqueeze(-1).expand(-1, -1, c), x.view(b, count, c).to(tokens.dtype))
        known += count
    return tokens


def _given(tokens, keep, shape, device) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """-> (a copy of the given tokens or zeros, their keep-mask, how many tokens each row is given)."""
    if tokens is None:
        return torch.zeros(*shape, device=device), None, 0  # nothing given: no mask to read back from the device
    if keep is None:
        raise ValueError("inpainting needs `keep`, a (B, N) bool mask of the given tokens")
    known = int(keep[0].sum())
    if not bool((keep.sum(dim=1) == known).all()):
        raise ValueError("every row of `keep` must mark the same number of given tokens")
    return tokens.clone(), keep, known
