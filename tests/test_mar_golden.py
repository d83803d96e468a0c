"""Our code against MAR's own numbers: tests/fixtures/mar holds outputs of MAR's public code (random weights).

Tolerances (float32 everywhere, as the fixtures were made):
- diffusion constants: 1e-6 relative to the float64 golden arrays (our buffers are float32: 6e-8 rounding);
- VAE moments and decodes: 1e-4 absolute (the fixture README measured 2.6e-5 between 1 and 2 MAR threads);
- encoder output, z, losses: 1e-5 relative to the tensor's largest magnitude (summation order in GEMMs);
- reverse steps: each row relative to its own largest magnitude, 1e-5 (cosine's t=99 row reaches ~3e4).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from djepa.checkpoint import load_weights
from djepa.models.sampler import ar_schedule, cfg_at
from djepa.models.token_loss import guide

FIX = Path(__file__).parent / "fixtures" / "mar"


def close(ours, ref, rel=1e-5):
    ours, ref = ours.double(), ref.double()
    err = (ours - ref).abs().max().item()
    assert err <= rel * max(ref.abs().max().item(), 1e-12), f"max error {err:.3g}, scale {ref.abs().max().item():.3g}"


def close_rows(ours, ref, rel=1e-5):
    for a, b in zip(ours, ref):
        close(a, b, rel)


@pytest.fixture(scope="module")
def golden():
    return load_file(str(FIX / "mar_tiny_golden.safetensors"))


@pytest.fixture(scope="module")
def mar_tiny(tmp_path_factory):
    """The tiny MAR checkpoint through our converter and our loader: -> the EMA model (what MAR's golden uses)."""
    from djepa.convert.mar import convert_mar

    out = tmp_path_factory.mktemp("mar") / "mar-tiny"
    convert_mar(FIX / "mar_tiny.pth", out, overrides=["model.num_heads=4"], log=lambda *_: None)
    cfg, _, ema = load_weights(out)
    return cfg, ema.eval()


def test_diffusion_constants_equal_mars():
    from djepa.models.token_loss import DiffusionLoss
    from djepa.config import TokenLossConfig

    ref = load_file(str(FIX / "diffusion_constants.safetensors"))
    loss = DiffusionLoss(16, 8, TokenLossConfig(depth=1, width=8, diffusion={"schedule": "cosine"}))
    for prefix, d in (("train", loss.train_diffusion), ("gen", loss.sample_diffusion)):
        assert d.timestep_map.tolist() == ref[f"{prefix}_timestep_map"].tolist()
        for ours, theirs in [("betas", "betas"), ("alphas_cumprod", "alphas_cumprod"),
                             ("posterior_variance", "posterior_variance"),
                             ("posterior_log_variance_clipped", "posterior_log_variance_clipped"),
                             ("posterior_mean_coef1", "posterior_mean_coef1"),
                             ("posterior_mean_coef2", "posterior_mean_coef2"),
                             ("sqrt_recip_ac", "sqrt_recip_alphas_cumprod"),
                             ("sqrt_recipm1_ac", "sqrt_recipm1_alphas_cumprod")]:
            a, b = getattr(d, ours).double(), ref[f"{prefix}_{theirs}"]
            assert torch.allclose(a, b, rtol=1e-6, atol=0), f"{prefix}_{theirs}: {((a - b).abs() / b.abs()).max():.2e}"


def test_token_and_cfg_schedules_equal_mars():
    sched = json.loads((FIX / "schedules.json").read_text())
    for name, s in sched.items():
        if name.startswith("_"):
            continue
        n, steps = s["seq_len"], s["num_iter"]
        counts = ar_schedule(n, steps)
        assert counts == s["tokens_per_step"], name
        known = np.cumsum(counts).tolist()
        assert [cfg_at(3.0, "mar_linear", k, n) for k in known] == s["cfg3_linear"], name
        assert [cfg_at(3.0, "constant", k, n) for k in known] == s["cfg3_constant"], name
    # our own linear schedule reaches cfg at the last step, where MAR's stops at 1 + 2 (N - 1) / N
    assert cfg_at(3.0, "linear", 16, 16) == 3.0 and cfg_at(3.0, "mar_linear", 16, 16) == 2.875


def test_converted_vae_reproduces_mars_moments_and_decodes(tmp_path):
    from diffusers import AutoencoderKL

    from djepa.config import TokenizerConfig
    from djepa.convert.vae import convert_vae
    from djepa.models.tokenizer import VAETokenizer, patchify

    g = load_file(str(FIX / "kl_vae_golden.safetensors"))
    out = convert_vae(FIX / "kl_vae.ckpt", tmp_path / "vae", log=lambda *_: None)
    vae = AutoencoderKL.from_pretrained(out).eval()
    with torch.no_grad():
        moments = vae.encode(g["images"]).latent_dist.parameters
        assert (moments - g["moments"]).abs().max() < 1e-4
        assert (vae.decode(g["moments"][:, :16]).sample - g["decoded"]).abs().max() < 1e-4
    # through our tokenizer: MAR decodes tokens / 0.2325, which is what tokenizer.decode does (then clamps)
    tok = VAETokenizer(TokenizerConfig(kind="vae", image_size=64, channels=3, vae={"weights": str(out)}))
    tokens = patchify(g["latent"] * 0.2325, 1)
    assert (tok.decode(tokens) - g["decoded_from_latent"].clamp(-1, 1)).abs().max() < 1e-4


def test_converted_mar_encoder_and_predictor_equal_mars(mar_tiny, golden):
    cfg, ema = mar_tiny
    x = golden["latents"].flatten(2).transpose(1, 2)  # MAR.patchify at patch 1: (2, 16, 16)
    keep = torch.stack([torch.nonzero(m == 0).squeeze(1) for m in golden["mask"]])  # MAR keeps positions in order
    with torch.no_grad():
        enc = ema.encode(x, keep, ema.class_embedding(golden["labels"]))
        close(enc, golden["encoder_out"])
        close(ema.predict(enc, keep), golden["z"])
        null = ema.null_class.expand(2, -1)
        close(ema.predict(ema.encode(x, keep, null), keep), golden["z_uncond"])


def test_mask_of_mar_orders_is_the_first_entries():
    g = load_file(str(FIX / "mar_tiny_golden.safetensors"))
    m = int(g["num_masked"])
    expected = torch.zeros(2, 16).scatter(1, g["orders"][:, :m], 1.0)
    assert torch.equal(expected, g["mask"])  # our draw_mask masks orders[:, :m] too


def test_diffusion_loss_per_row_and_masked_mean_equal_mars(mar_tiny, golden, monkeypatch):
    cfg, ema = mar_tiny
    rows = golden["z"].shape[0] * golden["z"].shape[1]  # 32 = B x N
    target = golden["latents"].flatten(2).transpose(1, 2).reshape(rows, -1).repeat(4, 1)
    z = golden["z"].reshape(rows, -1).repeat(4, 1)
    d = ema.token_loss.train_diffusion
    with torch.no_grad():
        per_row = d.training_losses(ema.token_loss.net, target, golden["t"], z, golden["noise"])
    close(per_row, golden["loss_per_row"])

    # the model's own loss path (masked tokens only, batch_mul draws) with MAR's t and noise for those rows
    masked = torch.stack([torch.nonzero(m == 1).squeeze(1) for m in golden["mask"]])  # (2, 12), in position order
    pick = torch.cat([k * rows + b * 16 + masked[b] for k in range(4) for b in range(2)])
    monkeypatch.setattr(torch, "randint", lambda *a, **k: golden["t"][pick])
    monkeypatch.setattr(torch, "randn_like", lambda x, **k: golden["noise"][pick])
    x = golden["latents"].flatten(2).transpose(1, 2)
    with torch.no_grad():
        out = ema.losses(golden["z"], x, None, masked)
    close(out["loss_d"], golden["loss"])


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_reverse_step_equals_mars_p_sample(mar_tiny, golden, cfg_scale):
    cfg, ema = mar_tiny
    gen, net = ema.token_loss.sample_diffusion, ema.token_loss.net
    x_t, t = golden["x_t"], golden["t_sample"]
    tm = gen.timestep_map[t]
    with torch.no_grad():
        if cfg_scale == 1.0:
            out = net(x_t, tm, golden["cond"])
        else:  # [cond; uncond] rows, eps guided, the variance of the conditional half kept (MAR's forward_with_cfg)
            out = guide(net(torch.cat([x_t, x_t]), torch.cat([tm, tm]), torch.cat([golden["cond"], golden["cond_uncond"]])),
                          cfg_scale, channels=16)
        sample, x0 = gen.p_sample(out, x_t, t, golden["step_noise"], temperature=0.9)
    if cfg_scale == 1.0:
        close_rows(sample, golden["p_sample_out_cfg1"])
        close_rows(x0, golden["p_sample_pred_xstart_cfg1"])
    else:
        close_rows(sample, golden["p_sample_out_cfg2_5"])


def mar_params(d, depth_e, depth_d, w, depth_w, t=16, n=256, buf=64, classes=1000):
    """MAR's parameter count from its architecture (models/mar.py, diffloss.py): ViT blocks of 12 d^2 + 13 d,
    embeddings, z_proj, norms; SimpleMLPAdaLN with res blocks of 5 w^2 + 7 w. Independent of our code."""
    blk = 12 * d * d + 13 * d
    vit = (classes * d + d + t * d + d + 2 * d + (buf + n) * d + depth_e * blk + 2 * d + d * d + d + d
           + (buf + n) * d + depth_d * blk + 2 * d + n * d)
    den = (256 * w + w + w * w + w) + (d * w + w) + (t * w + w) + depth_w * (5 * w * w + 7 * w) + (w * 2 * t + 2 * t) \
        + (w * 2 * w + 2 * w)
    return vit + den


def test_mar_presets_have_mars_parameter_counts(mar_tiny):
    from djepa.models.summary import main

    # the closed form reproduces the two counts MAR's code gives: the fixture's 288,032 and MAR-B's 207,924,768
    assert mar_params(64, 2, 2, 64, 2, n=16, buf=4, classes=10) == 288_032 == sum(p.numel() for p in mar_tiny[1].parameters())
    assert mar_params(768, 12, 12, 1024, 6) == 207_924_768
    for preset, arch in [("mar-b", (768, 12, 12, 1024, 6)), ("mar-l", (1024, 16, 16, 1280, 8)),
                         ("mar-h", (1280, 20, 20, 1536, 12))]:
        assert main([f"configs/{preset}.yaml"])["trainable_params"] == mar_params(*arch), preset


def test_mar_weight_decay_rule_groups_like_mars_optimizer(mar_tiny):
    """MAR's saved AdamW has its two add_weight_decay groups: 68 tensors without decay, then 24 with 0.02.
    Our `no_decay: mar` rule must pick the same tensors (compared by the shapes of their Adam state, in order)."""
    import argparse

    from djepa.engine import build_optimizer

    cfg, ema = mar_tiny
    assert cfg.train.no_decay == "mar" and cfg.train.weight_decay_start == cfg.train.weight_decay_end == 0.02
    with torch.serialization.safe_globals([argparse.Namespace]):
        saved = torch.load(FIX / "mar_tiny.pth", map_location="cpu", weights_only=True)["optimizer"]
    groups = saved["param_groups"]
    assert [len(g["params"]) for g in groups] == [68, 24] and groups[1]["weight_decay"] == 0.02
    theirs = [tuple(saved["state"][i]["exp_avg"].shape) for i in groups[1]["params"]]
    opt = build_optimizer(ema.requires_grad_(True), cfg.train)
    decay = next(g for g in opt.param_groups if g.get("decay"))
    assert len(decay["params"]) == 24 and opt.defaults["eps"] == 1e-8
    assert sorted(tuple(p.shape) for p in decay["params"]) == sorted(theirs)
