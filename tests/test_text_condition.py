"""Text conditioning in the model and the sampler: condition dropout and the null text (an empty text stream),
classifier-free guidance with it, RoPE positions, and captions through the condition seam."""
import numpy as np
import pytest
import torch

from djepa.conditions import Conditioner, conditions_of, labels_for, preview_conditions
from djepa.config import ConfigError, load_config
from djepa.models.djepa import build_model
from djepa.models.sampler import generate

SMALL = ["model.encoder_depth=1", "model.predictor_depth=1", "model.token_loss.diffusion.sample_steps=4",
         "sample.ar_steps=4"]


def _model(*overrides):
    cfg = load_config("configs/digits-pairs.yaml", SMALL + list(overrides))
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.tokenizer).eval()
    with torch.no_grad():  # a random model whose text projection matters (zero-init blocks would hide it)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, model


def test_dropped_rows_get_the_empty_text_stream():
    cfg, model = _model()
    cond = Conditioner(cfg)(["3 left of 8", "eight right of three"])
    text, mask = model.condition(cond, torch.tensor([False, True]))
    assert mask[0].tolist() == [True] * 4 and not mask[1].any() and torch.equal(text, cond["text"])
    gtext, gmask = model.guided(model.condition(cond))
    assert gtext.shape[0] == 4 and gmask[:2].equal(cond["mask"]) and not gmask[2:].any()


def test_the_null_text_is_exactly_no_text():
    """An all-masked text stream gives the encoder and predictor outputs of the same caption-free input, whatever
    the caption's words: guidance's unconditional branch does not depend on the prompt."""
    cfg, model = _model()
    tokens = torch.randn(2, model.num_tokens, model.token_dim)
    keep = torch.arange(model.num_tokens).expand(2, -1)[:, :10]
    a = Conditioner(cfg)(["3 left of 8", "1 left of 2"])
    b = Conditioner(cfg)(["nine right of zero", "4 left of 7"])
    with torch.no_grad():
        za, zb = (model.predict(model.encode(tokens, keep, c), keep, c)
                  for c in (model.condition(x, torch.tensor([True, True])) for x in (a, b)))
        zc = model.predict(model.encode(tokens, keep, model.condition(a)), keep, model.condition(a))
    torch.testing.assert_close(za, zb, atol=1e-6, rtol=0)
    assert (za - zc).abs().max() > 1e-3  # the caption itself does reach the features


def test_guidance_at_cfg_0_samples_the_unconditional_model():
    """cfg 0 (constant schedule) keeps only the null-text branch: the samples of the empty stream at cfg 1. (Flow
    loss: the diffusion loss guides eps only and keeps the conditional learned variance, as MAR does.)"""
    cfg, model = _model("model.token_loss.kind=flow", "model.token_loss.flow.sample_steps=4")
    cond = Conditioner(cfg)(["3 left of 8", "8 left of 3"])
    null = {"text": cond["text"], "mask": torch.zeros_like(cond["mask"])}
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    guided = generate(model, cond, 4, cfg=0.0, cfg_schedule="constant", generator=g1)
    uncond = generate(model, null, 4, cfg=1.0, generator=g2)
    torch.testing.assert_close(guided, uncond, atol=1e-4, rtol=1e-4)
    cond_only = generate(model, cond, 4, cfg=1.0, generator=torch.Generator().manual_seed(1))
    assert (cond_only - uncond).abs().max() > 1e-2


def test_rope_positions_need_no_table_and_train():
    cfg, model = _model("model.positions=rope")
    assert not hasattr(model, "token_loss_pos") and model.encoder_pos.shape[1] == cfg.model.buffer_size
    assert "rope_cos" not in model.state_dict()  # derived from the config, never saved
    tokens = torch.randn(4, model.num_tokens, model.token_dim)
    ema = build_model(cfg.model, cfg.tokenizer)
    out = model.train()(tokens, Conditioner(cfg)(["3 left of 8"] * 4), target=ema)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.text_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"rotates pairs of each head's 3 dims"):
        load_config("configs/digits-pairs.yaml", ["model.width=12", "model.num_heads=4", "model.positions=rope"])


def test_evaluation_conditions_cycle_the_held_out_captions():
    cfg = load_config("configs/digits-pairs.yaml")
    raw = conditions_of(cfg, 718, 722)
    from djepa.text.pairs import caption_digits, pairs

    held = pairs("digits_pairs", "held").captions
    assert list(raw) == [held[718], held[719], held[0], held[1]]
    assert labels_for(cfg, raw).tolist() == [10 * a + b for a, b in map(caption_digits, raw)]
    grid, ncol = preview_conditions(cfg)
    assert ncol == 10 and list(grid[:2]) == ["3 left of 8", "8 left of 3"]  # a caption beside its swapped twin


def test_text_config_mistakes_are_named():
    with pytest.raises(ConfigError, match=r"model.text_dim=30, but the words encoder gives 39-d .*set model.text_dim=39"):
        load_config("configs/digits-pairs.yaml", ["model.text_dim=30"])
    with pytest.raises(ConfigError, match=r"data.source=digits_pairs is captioned data; set model.condition=text"):
        load_config("configs/digits-pairs.yaml", ["model.condition=class"])
    with pytest.raises(ConfigError, match=r"data.hflip would swap the digits"):
        load_config("configs/digits-pairs.yaml", ["data.hflip=true"])
    with pytest.raises(ConfigError, match=r"eval.features clip .* needs model.condition=text"):
        load_config("configs/mnist.yaml", ["eval.features=[clip]"])


def test_t2i_preset_builds_offline_with_its_text_encoder_layout():
    from djepa.models.summary import main

    out = main(["configs/djepa-l-t2i.yaml"])
    assert out["trainable_params"] == 1_275_487_808 and out["text_encoder_params"] == 1_543_714_304
    cfg = load_config("configs/djepa-l-t2i.yaml")
    assert cfg.tokenizer.grid_shape == (16, 16) and cfg.tokenizer.token_dim == 64  # 16 x 32 x 32, patch 2
    assert cfg.tokenizer.latent_shape == (16, 32, 32)
