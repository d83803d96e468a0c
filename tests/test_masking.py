import math

import numpy as np
import torch

from djepa.models.djepa import build_model
from djepa.models.masking import mask_ratio_distribution, num_masked_tokens, random_orders


def test_mask_ratio_distribution_matches_truncated_normal():
    # the model draws a ratio as the inverse CDF of a uniform: the same path, vectorised here
    u = np.random.default_rng(0).random(50000)
    draws = mask_ratio_distribution().ppf(u)
    assert draws.min() >= 0.7 and draws.max() <= 1.0
    # closed form of the mean of N(1, 0.25) truncated to [0.7, 1] (standardised bounds -1.2 and 0)
    phi = lambda a: math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    Phi = lambda a: 0.5 * (1 + math.erf(a / math.sqrt(2)))
    expected = 1.0 + 0.25 * (phi(-1.2) - phi(0.0)) / (Phi(0.0) - Phi(-1.2))
    assert abs(expected - 0.867) < 1e-3
    assert abs(draws.mean() - expected) < 2e-3
    assert abs(mask_ratio_distribution().mean() - expected) < 1e-9


def test_model_masks_ceil_of_ratio_times_n(tiny):
    model = build_model(tiny().model, tiny().tokenizer)
    seen = set()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        u = torch.rand((), generator=g).item()
        masked, visible = model.draw_mask(4, "cpu", torch.Generator().manual_seed(seed))
        assert masked.shape[1] == math.ceil(mask_ratio_distribution().ppf(u) * 16)
        assert masked.shape[1] + visible.shape[1] == 16
        seen.add(masked.shape[1])
    assert min(seen) >= 12 and max(seen) == 16  # ceil(0.7 * 16) = 12


def test_orders_are_permutations_and_ceil_masks():
    g = torch.Generator().manual_seed(0)
    orders = random_orders(64, 16, generator=g)
    assert torch.equal(orders.sort(dim=1).values, torch.arange(16).expand(64, 16))
    assert not torch.equal(orders[0], orders[1])  # a different order per sample
    m = num_masked_tokens(0.71, 16)
    assert m == math.ceil(0.71 * 16) == 12
    assert num_masked_tokens(1.0, 256) == 256
