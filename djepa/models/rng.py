"""Random draws from one generator, or from one generator per sample (EDM2's per-image seeds).

With a `RowGenerator` every draw of shape (B * k, ...) takes rows [i k, (i + 1) k) from
sample i's own generator, so a sample depends only on its seed: never on the batch it
shares, the batch size, or how many workers split the set.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


class RowGenerator:
    """One torch.Generator per batch row, seeded from `seeds` (one int per sample)."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.gens)


def _draw(fn, shape, generator, device, dtype) -> torch.Tensor:
    if not isinstance(generator, RowGenerator):
        return fn(shape, generator=generator, device=device, dtype=dtype)
    b = len(generator)
    if shape[0] % b:
        raise ValueError(f"a per-sample draw needs a leading dimension divisible by {b} samples, got {tuple(shape)}")
    per_row = (shape[0] // b, *shape[1:])
    return torch.cat([fn(per_row, generator=g, device=device, dtype=dtype) for g in generator.gens])


def randn(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    return _draw(torch.randn, tuple(shape), generator, device, dtype)


def rand(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    return _draw(torch.rand, tuple(shape), generator, device, dtype)
