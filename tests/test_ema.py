"""The EMA decay warm-up: its schedule against the closed form, the paper presets untouched after it, and
a short run whose EMA samples digits as well as the raw weights (a constant decay samples noise there)."""
import math
from fractions import Fraction
from pathlib import Path

import pytest

from djepa.config import load_config
from djepa.models.ema import ema_decay_at, ema_warmup_end


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 0.995, 0.999, 0.9999])
def test_decay_schedule_is_the_closed_form(decay):
    end = ema_warmup_end(decay)
    # (1 + t) / (10 + t) >= decay  <=>  t >= (10 decay - 1) / (1 - decay), in exact arithmetic
    exact = max(0, math.ceil(Fraction(10 * Fraction(decay) - 1) / (1 - Fraction(decay))))
    assert abs(end - exact) <= 1  # float rounding of (1 + t) / (10 + t) may move the boundary by one
    for t in [0, 1, 2, 5, 10, 100, 1000, end - 1, end, end + 1, 10 * end + 7, 10**7]:
        if t < 0:
            continue
        assert ema_decay_at(t, decay) == min(decay, (1 + t) / (10 + t))
        assert ema_decay_at(t, decay, warmup=False) == decay
        if t >= end:
            assert ema_decay_at(t, decay) == decay  # exactly the configured constant from here on
    if end > 0:
        assert ema_decay_at(end - 1, decay) < decay
    assert ema_decay_at(0, decay) == min(decay, 0.1)  # the first update keeps 10% of the initialisation


def test_init_weight_is_small_after_any_number_of_updates():
    """The initialisation's weight in the EMA after n updates is prod(decay_t): (1/10)(2/11)... = 9!*n!/(n+9)!,
    i.e. O(n^-9) during the warm-up; a constant 0.995 leaves 0.995^289 = 24% of it after 289 steps."""
    for n in (1, 10, 100, 289):
        weight = math.prod(ema_decay_at(t, 0.995) for t in range(n))
        assert weight == pytest.approx(math.factorial(9) * math.factorial(n) / math.factorial(n + 9), rel=1e-9)
    assert math.prod(ema_decay_at(t, 0.995) for t in range(289)) < 1e-15
    assert 0.995 ** 289 == pytest.approx(0.235, abs=1e-3)


@pytest.mark.parametrize("preset", ["djepa-b", "djepa-l", "djepa-h", "mar-b", "mar-l", "mar-h"])
def test_paper_presets_keep_the_constant_decay_and_a_warm_up_would_be_forgotten(preset):
    cfg = load_config(Path("configs") / f"{preset}.yaml")
    decay, steps = cfg.model.ema_decay, cfg.train.steps
    # the paper, MAR and the authors update with a constant 0.9999 from step 0: the presets do too
    assert decay == 0.9999 and not cfg.model.ema_warmup
    assert all(ema_decay_at(t, decay, cfg.model.ema_warmup) == decay for t in (0, 1, 10, 10_000))
    # and had the warm-up been on, it would reach the constant early and leave no trace in the final EMA
    end = ema_warmup_end(decay)
    assert end == 89_990 and end < steps / 2
    assert decay ** (steps - end) < 1e-6  # 250k steps (MAR's 400 epochs): 1e-7; 875k: 1e-34


@pytest.mark.slow
def test_short_run_ema_samples_as_well_as_the_raw_weights(tiny):
    """250 steps on the digits: the warmed-up EMA samples digits the real-data classifier recognises as
    often as the raw weights' samples; a constant decay (the old EMA, kept beside it) samples near chance."""
    import torch

    from djepa.data.sources import load_source
    from djepa.engine import build_optimizer, train_step
    from djepa.eval.classifier import class_consistency
    from djepa.models.djepa import build_model
    from djepa.models.ema import ema_update, make_ema
    from djepa.models.tokenizer import build_tokenizer
    from djepa.samples import balanced_labels, sample_images

    cfg = tiny("model.width=64", "model.token_loss.width=64", "model.ema_decay=0.995", "train.batch_size=64",
               "train.blr=4e-3", "train.warmup_steps=20", "train.steps=250", "train.lr_schedule=cosine",
               "model.token_loss.diffusion.sample_steps=20")
    torch.manual_seed(0)
    images, labels = map(torch.from_numpy, load_source("digits"))
    tokenizer = build_tokenizer(cfg.tokenizer)
    model = build_model(cfg.model, cfg.tokenizer)
    ema, constant = make_ema(model), make_ema(model)
    opt = build_optimizer(model, cfg.train)
    gen = torch.Generator().manual_seed(0)
    for step in range(cfg.train.steps):
        idx = torch.randint(0, len(images), (cfg.train.batch_size,), generator=gen)
        train_step(model, ema, opt, tokenizer.encode(images[idx]), labels[idx], step, cfg.train,
                   ema_decay_at(step, cfg.model.ema_decay))
        ema_update(constant, model, cfg.model.ema_decay)  # the EMA as it was: 0.995 from step 0
    y = balanced_labels(200, 10)
    cc = {name: class_consistency(sample_images(m.eval(), cfg, y, cfg_scale=3.0), y, "digits")
          for name, m in (("raw", model), ("ema", ema), ("constant", constant))}
    assert cc["raw"] > 0.6, cc  # the run did learn
    assert cc["ema"] >= cc["raw"] - 0.05, cc  # as good within two standard errors of 200 samples (0.025 each)
    assert cc["constant"] < 0.4, cc  # 0.995 ** 250 = 29% initialisation: what the demo sampled before
