import math

import pytest
import torch

from djepa.models.djepa import build_model
from djepa.models.sampler import ar_schedule, cfg_at, generate


@pytest.mark.parametrize("n", [1, 2, 5, 16, 64, 256])
def test_ar_schedule_sums_to_n_with_at_least_one_per_step(n):
    for steps in range(1, n + 1):
        counts = ar_schedule(n, steps)
        assert len(counts) == steps and sum(counts) == n and min(counts) >= 1


def test_ar_schedule_extremes_and_cosine_shape():
    assert ar_schedule(256, 256) == [1] * 256   # T = N: next-token prediction
    assert ar_schedule(256, 1) == [256]         # T = 1: one shot
    counts = ar_schedule(256, 64)
    # remaining-masked after step s follows floor(N cos(pi/2 (s+1)/T)) where it is not clamped
    remaining = 256 - torch.tensor(counts).cumsum(0)
    for s in (30, 50, 62):
        assert remaining[s].item() == math.floor(256 * math.cos(math.pi / 2 * (s + 1) / 64))
    with pytest.raises(ValueError, match="ar_steps"):
        ar_schedule(16, 17)


def test_cfg_linear_schedule():
    assert cfg_at(3.0, "linear", 0, 16) == 1.0
    assert cfg_at(3.0, "linear", 16, 16) == 3.0
    assert cfg_at(3.0, "linear", 8, 16) == 2.0
    assert cfg_at(3.0, "constant", 1, 16) == 3.0


class _Recorder:
    """Wraps a token loss's sampler to record how many tokens each call denoises."""

    def __init__(self, token_loss):
        self.inner, self.rows = token_loss.sample, []

    def __call__(self, z, temperature, cfg, guided, generator):
        self.rows.append((z.shape[0], cfg, guided))
        return self.inner(z, temperature, cfg, guided, generator)


@pytest.fixture
def model(tiny):
    cfg = tiny()
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.tokenizer).eval()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("steps, expected", [(16, [1] * 16), (1, [16])])
def test_tokens_per_step(model, steps, expected):
    rec = _Recorder(model.token_loss)
    model.token_loss.sample = rec
    labels = torch.arange(3)
    out = generate(model, labels, ar_steps=steps, generator=_gen(0))
    assert out.shape == (3, 16, 4)
    assert [r[0] // 3 for r in rec.rows] == expected
    assert not any(r[2] for r in rec.rows)  # cfg = 1: the batch is not doubled


def test_batch_doubles_only_with_guidance(model):
    rec = _Recorder(model.token_loss)
    model.token_loss.sample = rec
    generate(model, torch.arange(2), ar_steps=4, cfg=3.0, generator=_gen(0))
    counts = ar_schedule(16, 4)
    assert [r[0] for r in rec.rows] == [2 * 2 * c for c in counts] and all(r[2] for r in rec.rows)
    scales = [r[1] for r in rec.rows]
    assert scales == sorted(scales) and scales[-1] == pytest.approx(3.0)  # linear in the known fraction


def test_deterministic_for_a_seed(model):
    labels = torch.tensor([1, 2, 3, 4])
    a = generate(model, labels, ar_steps=4, cfg=2.0, temperature=0.9, generator=_gen(5))
    b = generate(model, labels, ar_steps=4, cfg=2.0, temperature=0.9, generator=_gen(5))
    c = generate(model, labels, ar_steps=4, cfg=2.0, temperature=0.9, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_cfg_one_equals_unguided_path(tiny, kind):
    cfg = tiny(f"model.token_loss.kind={kind}")
    torch.manual_seed(0)
    m = build_model(cfg.model, cfg.tokenizer).eval()
    with torch.no_grad():  # give the zero-initialised output layer some weight so outputs depend on z
        for p in m.token_loss.net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    labels = torch.tensor([0, 3, 7])
    plain = generate(m, labels, ar_steps=4, cfg=1.0, generator=_gen(1))
    guided = generate(m, labels, ar_steps=4, cfg=1.0, generator=_gen(1), force_guidance=True)
    # an untrained denoiser gives large values: compare relative to their scale
    assert torch.allclose(plain, guided, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
    assert not torch.allclose(plain, generate(m, labels, ar_steps=4, cfg=4.0, generator=_gen(1)), atol=1e-3)


def test_inpainting_keeps_given_tokens_bit_exactly(model):
    labels = torch.tensor([0, 1])
    given = torch.randn(2, 16, 4)
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[:, :6] = True   # the top rows given: outpaint the rest
    keep[1] = keep[1].roll(5)
    out = generate(model, labels, ar_steps=4, cfg=2.0, generator=_gen(0), tokens=given, keep=keep)
    assert torch.equal(out[keep], given[keep])
    assert not torch.equal(out[~keep], given[~keep])
    with pytest.raises(ValueError, match="same number"):
        bad = keep.clone()
        bad[0, 10] = True
        generate(model, labels, tokens=given, keep=bad)


def test_sample_seed_changes_the_samples_on_cpu_and_seeds_are_per_sample():
    """torch's CPU generator keeps only the low 32 bits of a seed: (seed << 32) + i made sample.seed a no-op."""
    import numpy as np

    from djepa.models.rng import RowGenerator, randn
    from djepa.samples import sample_seeds

    a, b = sample_seeds(0, np.arange(4)), sample_seeds(1, np.arange(4))
    assert len(set(a) | set(b)) == 8 and all(0 <= s < 2**63 for s in a + b)
    assert sample_seeds(0, np.arange(2, 4)) == a[2:]  # a function of (seed, index) only
    draw = [randn((4, 3), RowGenerator(s)) for s in (a, b)]
    assert not torch.equal(draw[0], draw[1])
    low = [{s & 0xFFFFFFFF for s in seeds} for seeds in (a, b)]
    assert not low[0] & low[1]  # the bits a CPU generator uses differ between seeds
