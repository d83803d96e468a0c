"""EMA of the whole model: one copy serves as the target encoder and as the sampling weights."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy in eval mode (no dropout in the targets); it never receives gradients."""
    ema = copy.deepcopy(model).eval()
    return ema.requires_grad_(False)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter; buffers are copied."""
    ema_p, src_p = list(ema.parameters()), list(model.parameters())
    if len(ema_p) != len(src_p):
        raise ValueError("EMA and model have different parameter lists")
    # No per-parameter detach / cast: under no_grad the foreach op reads the parameters as they are, and a
    # detach is one dispatched op per tensor (~350 of a B step's ~3,900, benchmarks/op_count.py).
    # A model of another dtype than its EMA copy (none here) is cast first.
    if any(p.dtype != q.dtype for p, q in zip(src_p, ema_p)):
        src_p = [p.to(q.dtype) for p, q in zip(src_p, ema_p)]
    torch._foreach_lerp_(ema_p, src_p, 1.0 - decay)
    ema_b, src_b = list(ema.buffers()), list(model.buffers())
    if ema_b:  # one grouped copy instead of a launch per buffer (~30 diffusion constants)
        torch._foreach_copy_(ema_b, src_b)
