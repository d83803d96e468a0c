"""EMA of the whole model: one copy serves as the target encoder and as the sampling weights.

The decay warms up with the number of updates, as TensorFlow's `ExponentialMovingAverage(num_updates=)`
and diffusers' `EMAModel` (its default) do: update t (0-based) uses min(decay, (1 + t) / (10 + t)).
Why this one: a constant decay from step 0 leaves a short run's EMA mostly the random initialisation
(0.995 after 289 steps is still 0.995**289 = 24% init, and its samples were noise while the raw weights'
were digits). With the warm-up the EMA averages roughly the last t/9 updates, so it is an average of
trained weights at every step. Bias correction (Adam-style, dividing by 1 - decay**t) was the other
candidate; it weights the first, barely trained steps as much as the recent ones in a short run.
EDM2's power EMA has no constant to settle on, and the paper's presets name one (0.9999).
From update `ema_warmup_end(decay)` on the decay is exactly the configured constant (0.9999: from the
89,991st update; 0.995: from the 1,791st); after a 500k-step preset run the warm-up's updates weigh
0.9999**410,009 < 1e-17 in the EMA, so the sampling weights follow the paper.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy in eval mode (no dropout in the targets); it never receives gradients."""
    ema = copy.deepcopy(model).eval()
    return ema.requires_grad_(False)


def ema_decay_at(updates: int, decay: float, warmup: bool = True) -> float:
    """The decay of EMA update number `updates` (0-based, = EMA updates done before this one)."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def ema_warmup_end(decay: float) -> int:
    """The first update whose warmed-up decay is the constant: (1 + t) / (10 + t) >= decay
    <=> t >= (10 * decay - 1) / (1 - decay). decay = 1 (a frozen EMA) never gets there."""
    if decay >= 1.0:
        raise ValueError("ema_decay = 1 keeps the EMA frozen: the warm-up never ends")
    t = max(0, math.ceil((10 * decay - 1) / (1 - decay)))
    while t > 0 and ema_decay_at(t - 1, decay) >= decay:  # float rounding of the closed form
        t -= 1
    while ema_decay_at(t, decay) < decay:
        t += 1
    return t


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
