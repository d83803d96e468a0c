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
    ema_p = [p for p in ema.parameters()]
    src_p = [p.detach().to(q.dtype) for p, q in zip(model.parameters(), ema_p)]
    if len(ema_p) != len(list(model.parameters())):
        raise ValueError("EMA and model have different parameter lists")
    torch._foreach_lerp_(ema_p, src_p, 1.0 - decay)
    ema_b, src_b = list(ema.buffers()), list(model.buffers())
    if ema_b:  # one grouped copy instead of a launch per buffer (~30 diffusion constants)
        torch._foreach_copy_(ema_b, src_b)
