"""Training masks: one ratio per batch from a truncated normal, a random order per sample."""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from scipy import stats


@lru_cache(maxsize=8)  # building a frozen scipy distribution costs ~0.3 ms, more than its ppf: once per run
def mask_ratio_distribution(ratio_min: float = 0.7, std: float = 0.25):
    """normal(1.0, std) truncated to [ratio_min, 1.0] (paper sec. 3.1; mean ~0.867 for the defaults)."""
    return stats.truncnorm((ratio_min - 1.0) / std, 0.0, loc=1.0, scale=std)


def random_orders(batch: int, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B, N) int64: an independent random permutation of the token positions per sample."""
    noise = torch.rand(batch, n, generator=generator, device=device)
    return noise.argsort(dim=1)


def num_masked_tokens(ratio: float, n: int) -> int:
    return min(n, math.ceil(ratio * n))
